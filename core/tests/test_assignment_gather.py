"""A big create's new tasks wait a little for the node's next ones (issue 18).

At 100,000 replicas on 1,000 nodes the scheduler gives a node one task about every 0.7 s, and
each went in an assignment message of its own: a stream message on the leader and on the
agent per task. While a service still has many tasks to place, its nodes' messages of new
tasks wait ``ASSIGNMENT_GATHER`` for the next ones; its last tasks, a small service's, a
removal or a task told to stop go at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from shoal import states
from shoal.manager import dispatcher as dispatcher_module
from shoal.manager.dispatcher import Dispatcher
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.dispatchprobe import next_task_ids, opened
from shoal.testing.objectstore import instant_store

#: Tasks a service must have left to place for its new tasks to wait (made small here).
UNPLACED = 3
#: Deadline of a message that must not wait (far below the gather in those tests).
PROMPT = 10.0


def _pending(service_id: str, index: int) -> pb.Task:
    task = pb.Task(id=f"{service_id}-{index}", service_id=service_id, slot=index + 1)
    task.spec.container.image = "app:1"
    task.desired_state = states.RUNNING
    task.status.state = states.PENDING
    return task


async def _seeded() -> tuple[ObjectStore, Dispatcher]:
    store = await instant_store()

    def seed(tx: Tx) -> None:
        tx.create(pb.Node(id="w1", role=pb.NodeSpec.WORKER))
        for service_id, count in (("big", 10), ("small", 1)):
            service = pb.Service(id=service_id)
            service.spec.replicated.replicas = count
            tx.create(service)
            for index in range(count):
                tx.create(_pending(service_id, index))

    await store.update(seed)
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    dispatcher.start()
    return store, dispatcher


async def _assign(store: ObjectStore, *task_ids: str) -> None:
    def write(tx: Tx) -> None:
        for task_id in task_ids:
            task = copy(tx.task(task_id))  # type: ignore[type-var]
            task.node_id = "w1"
            task.status.state = states.ASSIGNED
            tx.update(task)

    await store.update(write)


async def test_a_big_services_next_task_goes_in_the_same_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatcher_module, "GATHER_MIN_UNPLACED", UNPLACED)
    monkeypatch.setattr(dispatcher_module, "ASSIGNMENT_GATHER", 2.0)
    store, dispatcher = await _seeded()
    try:
        stream, complete = await opened(dispatcher)
        assert not complete.changes
        following = asyncio.ensure_future(next_task_ids(stream, 30.0))
        await _assign(store, "big-0")
        await asyncio.sleep(0.1)  # past the stream's debounce: it was a message of its own
        await _assign(store, "big-1")
        assert await following == ["big-0", "big-1"]  # before: ["big-0"]
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await dispatcher.stop()


@pytest.mark.parametrize(
    "change",
    [
        lambda store: _assign(store, "small-0"),  # a small service's
        lambda store: _assign(store, *(f"big-{i}" for i in range(8))),  # a big one's last (2 left)
    ],
    ids=["small service", "last tasks"],
)
async def test_a_small_services_task_and_a_big_ones_last_go_at_once(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[ObjectStore], object]
) -> None:
    monkeypatch.setattr(dispatcher_module, "GATHER_MIN_UNPLACED", UNPLACED)
    monkeypatch.setattr(dispatcher_module, "ASSIGNMENT_GATHER", 60.0)
    store, dispatcher = await _seeded()
    try:
        stream, complete = await opened(dispatcher)
        assert not complete.changes
        await change(store)  # type: ignore[misc]
        assert await next_task_ids(stream, PROMPT)
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await dispatcher.stop()


async def test_the_counts_of_tasks_to_place() -> None:
    from shoal.manager.servicecounts import ServiceTaskCounts

    store, dispatcher = await _seeded()
    await dispatcher.stop()
    counts = store.derived(ServiceTaskCounts)
    assert (counts.unplaced("big"), counts.unplaced("small")) == (10, 1)
    await _assign(store, "big-0", "big-1")
    assert counts.unplaced("big") == 8

    def stop_one(tx: Tx) -> None:  # a task no longer desired running is not to be placed
        task = copy(tx.task("big-2"))  # type: ignore[type-var]
        task.desired_state = states.SHUTDOWN
        tx.update(task)

    await store.update(stop_one)
    assert counts.unplaced("big") == 7
    await store.update(lambda tx: tx.delete("task", "big-3"))
    assert counts.unplaced("big") == 6
    fresh = ServiceTaskCounts(store)
    fresh.restored()
    assert fresh.unplaced("big") == 6
