"""A stand-in for one node's managers, for measuring a real agent without managers or gRPC.

It is the agent's transport: it opens a session, sends the node its tasks in incremental
assignment messages once ``go`` is set, asks them down once ``stop`` is set, removes them once
all reported SHUTDOWN, and records every status report (the agent's tests count its work per
task with it, ``bench/bench_agent_cpu.py`` its CPU per task).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from shoal import rpc, states
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb


def assigned_task(node_id: str, index: int) -> pb.Task:
    """The ``index``-th task of a service ``web`` as the dispatcher assigns it to ``node_id``."""
    task = pb.Task(id=f"{node_id}-t{index:06d}", node_id=node_id, service_id="s1", slot=index + 1)
    task.desired_state = states.RUNNING
    task.service_annotations.name = "web"
    task.spec.container.image = "app:1"
    task.status.state = states.ASSIGNED
    return task


class StubManager:
    """One node's managers, scripted: see the module's docstring. ``on_report`` sees each
    status report as it arrives (before the stub counts it)."""

    def __init__(
        self,
        tasks: list[pb.Task],
        *,
        per_message: int = 0,
        on_report: Callable[[rpb.UpdateTaskStatusRequest], None] = lambda report: None,
    ) -> None:
        self.tasks = tasks
        self.per_message = per_message or len(tasks) or 1
        self.on_report = on_report
        self.go, self.stop = asyncio.Event(), asyncio.Event()
        self.all_running, self.all_down = asyncio.Event(), asyncio.Event()
        self.reports: list[rpb.UpdateTaskStatusRequest] = []
        self.latest: dict[str, int] = {}

    @property
    def updates(self) -> int:
        return sum(len(report.updates) for report in self.reports)

    def stream(self, target: str, method: str, request: bytes, **kwargs: object) -> AsyncIterator[bytes]:
        return self._session() if method == rpc.SESSION else self._assignments()

    async def _session(self) -> AsyncIterator[bytes]:
        yield rpb.SessionMessage(session_id="s1", heartbeat_period=60).SerializeToString()
        await asyncio.Event().wait()

    def _messages(self, sequence: int, desired: int) -> list[rpb.AssignmentsMessage]:
        messages = []
        for first in range(0, len(self.tasks), self.per_message):
            message = rpb.AssignmentsMessage(
                type=rpb.AssignmentsMessage.INCREMENTAL, applies_to=sequence, results_in=sequence + 1
            )
            sequence += 1
            for task in self.tasks[first : first + self.per_message]:
                sent = message.changes.add(action=rpb.AssignmentChange.UPDATE, task=task).task
                sent.desired_state = desired  # type: ignore[assignment]
            messages.append(message)
        return messages

    async def _assignments(self) -> AsyncIterator[bytes]:
        yield rpb.AssignmentsMessage(type=rpb.AssignmentsMessage.COMPLETE, results_in=1).SerializeToString()
        await self.go.wait()
        sequence = 1
        for message in self._messages(sequence, states.RUNNING):
            sequence = message.results_in
            yield message.SerializeToString()
        await self.stop.wait()
        for message in self._messages(sequence, states.SHUTDOWN):
            sequence = message.results_in
            yield message.SerializeToString()
        await self.all_down.wait()
        removal = rpb.AssignmentsMessage(
            type=rpb.AssignmentsMessage.INCREMENTAL, applies_to=sequence, results_in=sequence + 1
        )
        for task in self.tasks:
            removal.changes.add(action=rpb.AssignmentChange.REMOVE, task=pb.Task(id=task.id))
        yield removal.SerializeToString()
        await asyncio.Event().wait()

    async def call(self, target: str, method: str, request: bytes, **kwargs: object) -> bytes:
        if method == rpc.HEARTBEAT:
            return rpb.HeartbeatResponse(period=60).SerializeToString()
        if method == rpc.UPDATE_TASK_STATUS:
            report = rpb.UpdateTaskStatusRequest.FromString(request)
            self.on_report(report)
            self.reports.append(report)
            for update in report.updates:
                self.latest[update.task_id] = update.status.state
            if self._all(states.RUNNING):
                self.all_running.set()
            if self._all(states.SHUTDOWN):
                self.all_down.set()
        return b""

    def _all(self, state: int) -> bool:
        return len(self.latest) == len(self.tasks) and all(s == state for s in self.latest.values())
