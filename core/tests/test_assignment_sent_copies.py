"""The leader holds one Task message per task, not two (issue 18).

An assignment stream remembers what it last sent of each task (``sent``), to send nothing
back when only the status changes (the agent's own reports). It kept the version it sent, the
ASSIGNED one, while the store moved on to the agent's RUNNING: two Task messages per running
task on the leader (~1.2 KB each, ~120 MB at 100,000 replicas). A version that differs from
the sent one only in its status now takes its place: every later comparison is the same.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from shoal import states
from shoal.manager.dispatcher import Dispatcher
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.dispatchprobe import open_assignments, until
from shoal.testing.objectstore import instant_store

DEADLINE = 20.0


def _task(task_id: str) -> pb.Task:
    task = pb.Task(id=task_id, service_id="s1", node_id="w1", slot=1)
    task.spec.container.image = "app:1"
    task.desired_state = states.RUNNING
    task.status.state = states.ASSIGNED
    return task


async def _set(store: ObjectStore, task_id: str, change: Callable[[pb.Task], None]) -> None:
    def write(tx: Tx) -> None:
        task = copy(tx.task(task_id))  # type: ignore[type-var]
        change(task)
        tx.update(task)

    await store.update(write)


def _held_by_id(task: pb.Task) -> int:
    """How many dictionaries hold ``task`` under its ID (the store's table, a stream's ``sent``)."""
    return sum(1 for r in gc.get_referrers(task) if isinstance(r, dict) and r.get(task.id) is task)


async def test_a_running_task_is_held_once_not_also_as_sent() -> None:
    store = await instant_store()

    def seed(tx: Tx) -> None:
        tx.create(pb.Node(id="w1", role=pb.NodeSpec.WORKER))
        tx.create(pb.Service(id="s1"))
        tx.create(_task("t1"))
        tx.create(_task("t2"))

    await store.update(seed)
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    dispatcher.start()
    try:
        stream = open_assignments(dispatcher)
        complete = rpb.AssignmentsMessage.FromString(await stream.__anext__())
        assert {c.task.id for c in complete.changes} == {"t1", "t2"}
        assigned = store.view.tasks.get("t1")
        assert assigned is not None
        assert _held_by_id(assigned) == 2  # the store's table and the stream's ``sent``

        for state in (states.ACCEPTED, states.PREPARING, states.STARTING, states.RUNNING):
            await _set(store, "t1", lambda task, state=state: setattr(task.status, "state", state))
        # t2's desired state comes after t1's statuses: once it is queued, they were routed.
        await _set(store, "t2", lambda task: setattr(task, "desired_state", states.SHUTDOWN))
        await until(lambda: dispatcher.node_tasks.queued("w1") >= 1, "the desired state's event")

        running = store.view.tasks.get("t1")
        assert running is not None and running.status.state == states.RUNNING
        # Before: 1 (the stream still held the ASSIGNED version) and 1.
        assert _held_by_id(assigned) == 0
        assert _held_by_id(running) == 2

        # What the agent is sent is unchanged: t2's new desired state, none of t1's statuses.
        message = rpb.AssignmentsMessage.FromString(await asyncio.wait_for(stream.__anext__(), DEADLINE))
        assert [(c.task.id, c.task.desired_state) for c in message.changes] == [("t2", states.SHUTDOWN)]
        # And a change beyond the status after that still is.
        await _set(store, "t1", lambda task: setattr(task, "desired_state", states.SHUTDOWN))
        message = rpb.AssignmentsMessage.FromString(await asyncio.wait_for(stream.__anext__(), DEADLINE))
        assert [(c.task.id, c.task.desired_state) for c in message.changes] == [("t1", states.SHUTDOWN)]
        await stream.aclose()
    finally:
        await dispatcher.stop()
