"""A stand-in for one node's managers, for measuring a real agent without managers or gRPC.

It is the agent's transport: it opens a session, sends the node its tasks in incremental
assignment messages once ``go`` is set, asks them down once ``stop`` is set, removes them once
all reported SHUTDOWN, and records every status report (the agent's tests count its work per
task with it, ``bench/bench_agent_cpu.py`` its CPU per task).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from shoal import rpc, states
from shoal.agent.agent import Agent
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.runtime import RuntimeProvider
from shoal.roles.transport import TLSMaterial


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
        gap: float = 0.0,
        on_report: Callable[[rpb.UpdateTaskStatusRequest], None] = lambda report: None,
        stop_hold_ms: int = 0,
    ) -> None:
        self.tasks = tasks
        self.per_message = per_message or len(tasks) or 1
        #: Seconds between two assignment messages (0: all at once), as a node of
        #: a huge service gets its tasks a scheduler batch at a time, not all together.
        self.gap = gap
        self.on_report = on_report
        #: The ``report_within_ms`` of the messages that ask the tasks down (the leader's for
        #: a big service being removed).
        self.stop_hold_ms = stop_hold_ms
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

    def _messages(self, sequence: int, desired: int | None) -> list[rpb.AssignmentsMessage]:
        """The tasks in messages of ``per_message`` each: updates to ``desired``, or (None)
        removals."""
        messages = []
        for first in range(0, len(self.tasks), self.per_message):
            message = rpb.AssignmentsMessage(
                type=rpb.AssignmentsMessage.INCREMENTAL, applies_to=sequence, results_in=sequence + 1
            )
            sequence += 1
            if desired is not None and desired > states.RUNNING:
                message.report_within_ms = self.stop_hold_ms
            for task in self.tasks[first : first + self.per_message]:
                if desired is None:
                    message.changes.add(action=rpb.AssignmentChange.REMOVE, task=pb.Task(id=task.id))
                    continue
                sent = message.changes.add(action=rpb.AssignmentChange.UPDATE, task=task).task
                sent.desired_state = desired  # type: ignore[assignment]
            messages.append(message)
        return messages

    async def _assignments(self) -> AsyncIterator[bytes]:
        yield rpb.AssignmentsMessage(type=rpb.AssignmentsMessage.COMPLETE, results_in=1).SerializeToString()
        await self.go.wait()
        sequence = 1
        async for message in self._spaced(self._messages(sequence, states.RUNNING)):
            sequence = message.results_in
            yield message.SerializeToString()
        await self.stop.wait()
        async for message in self._spaced(self._messages(sequence, states.SHUTDOWN)):
            sequence = message.results_in
            yield message.SerializeToString()
        await self.all_down.wait()
        async for message in self._spaced(self._messages(sequence, None)):
            sequence = message.results_in
            yield message.SerializeToString()
        await asyncio.Event().wait()

    async def _spaced(self, messages: list[rpb.AssignmentsMessage]) -> AsyncIterator[rpb.AssignmentsMessage]:
        for number, message in enumerate(messages):
            if number and self.gap:
                await asyncio.sleep(self.gap)
            yield message

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


def stub_agent(manager: StubManager, state_dir: Path, runtime: RuntimeProvider, node_id: str) -> Agent:
    """A real agent whose managers are ``manager`` (not started)."""
    return Agent(
        node_id=node_id,
        state_dir=state_dir,
        runtime=runtime,
        runtime_name="fake",
        transport=manager,  # type: ignore[arg-type]
        tls=lambda: TLSMaterial(b"", b"", b""),
        managers=["m1:2377"],
    )


class Transactions:
    """Counts the write transactions on a SQLite connection: each COMMIT, and each write
    outside BEGIN ... COMMIT (autocommit: a transaction of its own)."""

    def __init__(self) -> None:
        self.count = 0
        self._open = False

    def __call__(self, statement: str) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb == "BEGIN":
            self._open = True
        elif verb in ("COMMIT", "END"):
            self._open = False
            self.count += 1
        elif verb in ("INSERT", "UPDATE", "DELETE") and not self._open:
            self.count += 1
