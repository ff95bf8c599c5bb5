"""One rule for "the task a replacement waits for can no longer run a container", shared by
the restart supervisor and the rolling update (review of issue 18: the supervisor waited for a
pre-assigned global task not yet ASSIGNED, which has no container, until its timeout)."""

from __future__ import annotations

import asyncio
import time

import pytest
from shoal import states
from shoal.manager.restarts import RestartSupervisor
from shoal.manager.tasks import old_task_gone
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx
from shoal.testing.objectstore import instant_store


async def _store(state: int, node_id: str = "n1", node_state: int = pb.NodeStatus.READY) -> ObjectStore:
    store = await instant_store()

    def seed(tx: Tx) -> None:
        node = pb.Node(id="n1")
        node.status.state = node_state  # type: ignore[assignment]
        tx.create(node)
        task = pb.Task(id="old", service_id="s", node_id=node_id, desired_state=states.SHUTDOWN)
        task.status.state = state  # type: ignore[assignment]
        tx.create(task)

    await store.update(seed)
    return store


@pytest.mark.parametrize(
    ("state", "node_id", "node_state", "gone"),
    [
        (states.RUNNING, "n1", pb.NodeStatus.READY, False),
        (states.ASSIGNED, "n1", pb.NodeStatus.READY, False),
        (states.PENDING, "n1", pb.NodeStatus.READY, True),  # pre-assigned, never handed over
        (states.RUNNING, "", pb.NodeStatus.READY, True),
        (states.RUNNING, "n1", pb.NodeStatus.DOWN, True),
        (states.RUNNING, "n9", pb.NodeStatus.READY, True),  # its node was removed
        (states.FAILED, "n1", pb.NodeStatus.READY, True),
        (states.SHUTDOWN, "n1", pb.NodeStatus.READY, True),
    ],
)
async def test_old_task_gone(state: int, node_id: str, node_state: int, gone: bool) -> None:
    store = await _store(state, node_id, node_state)
    assert old_task_gone(store.view, "old") is gone
    assert old_task_gone(store.view, "missing")


async def test_the_restart_supervisor_does_not_wait_for_a_task_never_handed_to_its_node() -> None:
    store = await _store(states.PENDING)
    supervisor = RestartSupervisor(store, needs_restart=lambda task: False, slot_freed=lambda service: None)
    # Before: woken only by an event of the task or its node, it waited for the deadline.
    await asyncio.wait_for(supervisor._wait_old_task("old", time.monotonic() + 60), 5)
