"""An assignment stream is not woken by what it would not send (issue 18).

Most task events on a leader are the statuses the agents reported themselves (ACCEPTED ...
RUNNING), which a stream never sends back (``_status_only_change``). Each was still queued
to its node's stream, which woke, looked the task up and dropped it: at 100,000 replicas about
one wake-up for nothing per task. The feed now asks the stream before queuing; what the agent
must hear of (the desired state, a removal) is queued and sent as before.
"""

from __future__ import annotations

import asyncio
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


async def test_statuses_the_agent_reported_do_not_wake_its_stream() -> None:
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
        # The stream is held at its yield: what the feed routes to it from now on waits queued.
        for state in (states.ACCEPTED, states.PREPARING, states.STARTING, states.RUNNING):
            await _set(store, "t1", lambda task, state=state: setattr(task.status, "state", state))
        await _set(store, "t2", lambda task: setattr(task, "desired_state", states.SHUTDOWN))
        await until(lambda: dispatcher.node_tasks.queued("w1") >= 1, "the desired state's event")
        await asyncio.sleep(0.05)  # anything routed late would be queued by now
        # Before: 5 (t1's four statuses as well, each a wake-up of the stream for nothing).
        assert dispatcher.node_tasks.queued("w1") == 1

        message = rpb.AssignmentsMessage.FromString(await stream.__anext__())
        assert [(c.task.id, c.task.desired_state) for c in message.changes] == [("t2", states.SHUTDOWN)]

        # A removal is still sent (its event holds the task as the agent was last told of it).
        await store.update(lambda tx: tx.delete("task", "t1"))
        removal = rpb.AssignmentsMessage.FromString(await asyncio.wait_for(stream.__anext__(), DEADLINE))
        assert [(c.action, c.task.id) for c in removal.changes] == [(rpb.AssignmentChange.REMOVE, "t1")]
        await stream.aclose()
    finally:
        await dispatcher.stop()
