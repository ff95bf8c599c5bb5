"""Probes of the dispatcher for in-process tests of how the leader batches what it sends to its
agents and what they report (issue 18: the status holds, the gathered assignment messages, the
streams not woken by reported statuses).

One copy of each probe instead of one per test module: the status-hold, removal-hold,
assignment-gather and assignment-wakeup tests all count the same calls and read the same
streams.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from shoal.agent.agent import Agent
from shoal.manager.dispatcher import Dispatcher, _Session
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import PeerIdentity

if TYPE_CHECKING:
    import pytest

#: How long a probe waits for a condition on a loaded CI machine.
DEADLINE = 40.0


async def until(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> None:
    """Wait for ``condition`` to be true, failing with ``what`` after ``deadline`` seconds."""
    give_up = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class StatusCalls:
    """Counts the leader's UpdateTaskStatus calls and the updates they carry."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.updates = 0
        handler = Dispatcher.update_task_status

        async def counted(dispatcher: Dispatcher, request: bytes, peer: PeerIdentity | None) -> bytes:
            self.calls += 1
            self.updates += len(rpb.UpdateTaskStatusRequest.FromString(request).updates)
            return await handler(dispatcher, request, peer)

        monkeypatch.setattr(Dispatcher, "update_task_status", counted)


class Holds:
    """Records each incremental assignment message's hold (``report_within_ms``), by the images
    of the tasks it updates."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by_image: collections.defaultdict[str, set[int]] = collections.defaultdict(set)
        apply = Agent._apply_assignments

        async def recorded(agent: Agent, message: rpb.AssignmentsMessage) -> Any:
            if message.type == rpb.AssignmentsMessage.INCREMENTAL:
                for change in message.changes:
                    if change.action == rpb.AssignmentChange.UPDATE and change.HasField("task"):
                        self.by_image[change.task.spec.container.image].add(message.report_within_ms)
            return await apply(agent, message)

        monkeypatch.setattr(Agent, "_apply_assignments", recorded)


def updates(*tasks: pb.Task) -> list[rpb.AssignmentChange]:
    """An assignment message's changes that send ``tasks``."""
    return [rpb.AssignmentChange(action=rpb.AssignmentChange.UPDATE, task=task) for task in tasks]


def report_within_ms(dispatcher: Dispatcher, changes: list[rpb.AssignmentChange]) -> int:
    """The hold the dispatcher gives a message of ``changes`` (it takes each change's task, or
    None for a removal)."""
    return dispatcher._report_within_ms(
        {
            change.task.id: None if change.action == rpb.AssignmentChange.REMOVE else change.task
            for change in changes
        }
    )


def open_assignments(dispatcher: Dispatcher, node_id: str = "w1") -> AsyncIterator[bytes]:
    """``node_id``'s assignment stream on ``dispatcher``, as its agent would open it (a session
    of its own); its first message is the complete set."""
    session = _Session("sess1", node_id, time.monotonic() + 600, dispatcher.stalled)
    dispatcher._sessions[session.session_id] = session
    request = rpb.AssignmentsRequest(session_id=session.session_id).SerializeToString()
    return dispatcher.assignments(request, PeerIdentity(node_id, "swarm-worker", "c1"))


async def opened(
    dispatcher: Dispatcher, node_id: str = "w1"
) -> tuple[AsyncIterator[bytes], rpb.AssignmentsMessage]:
    """``open_assignments`` with its first message (the complete set) read: the stream and that
    message."""
    stream = open_assignments(dispatcher, node_id)
    return stream, rpb.AssignmentsMessage.FromString(await stream.__anext__())


async def next_task_ids(stream: AsyncIterator[bytes], within: float) -> list[str]:
    """The task IDs of the stream's next message (sorted), which must come ``within`` seconds."""
    message = rpb.AssignmentsMessage.FromString(await asyncio.wait_for(stream.__anext__(), within))
    return sorted(change.task.id for change in message.changes)
