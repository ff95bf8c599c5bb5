"""An agent's assignment stream sends a few changes in a row at once (issue 18 item 4).

The stream's pacer let one message go at once, then one per ``ASSIGNMENT_DEBOUNCE``: a small
service created just after another change to the node (the last service's removal) waited out
the interval that change started (40-47 ms, back-to-back creates of 4). Now ``ASSIGNMENT_BURST``
messages may follow each other at once; a sustained stream is still paced.
"""

from __future__ import annotations

import pytest
from shoal import states
from shoal.manager import dispatcher as dispatcher_module
from shoal.manager.dispatcher import Dispatcher
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.dispatchprobe import next_task_ids, opened
from shoal.testing.objectstore import instant_store

#: Changes in a row that go at once (``ASSIGNMENT_BURST``; before, 1).
IN_A_ROW = 3
TASKS = IN_A_ROW + 1


async def _running_on_w1(count: int) -> tuple[ObjectStore, Dispatcher]:
    store = await instant_store()

    def seed(tx: Tx) -> None:
        tx.create(pb.Node(id="w1", role=pb.NodeSpec.WORKER))
        service = pb.Service(id="s")
        service.spec.replicated.replicas = count
        tx.create(service)
        for index in range(count):
            task = pb.Task(id=f"s-{index}", service_id="s", node_id="w1", slot=index + 1)
            task.desired_state = states.RUNNING
            task.status.state = states.RUNNING
            tx.create(task)

    await store.update(seed)
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    dispatcher.start()
    return store, dispatcher


async def _stop(store: ObjectStore, task_id: str) -> None:
    def write(tx: Tx) -> None:
        task = copy(tx.task(task_id))  # type: ignore[type-var]
        task.desired_state = states.SHUTDOWN
        tx.update(task)

    await store.update(write)


async def test_a_few_changes_in_a_row_go_at_once_and_a_stream_is_still_paced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatcher_module, "ASSIGNMENT_DEBOUNCE", 60.0)  # a held one never comes
    store, dispatcher = await _running_on_w1(TASKS)
    try:
        stream, _ = await opened(dispatcher)
        for index in range(IN_A_ROW):
            await _stop(store, f"s-{index}")
            # before: only the first came; the second waited the interval
            assert await next_task_ids(stream, 10.0) == [f"s-{index}"]
        await _stop(store, f"s-{IN_A_ROW}")
        with pytest.raises(TimeoutError):
            await next_task_ids(stream, 0.3)
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await dispatcher.stop()
