"""What one task costs the agent (issue 18: a hollow fleet spent ~1.2 ms of CPU per task).

A real agent on the fake runtime, against a stub manager that assigns it tasks and records the
status reports; each test counts one kind of work per task and fails on the code before the
change that cut it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shoal import rpc, states, tasktemplates
from shoal.agent import agent as agent_module
from shoal.agent.agent import Agent
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import TLSMaterial
from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.runtime import FakeRuntime

NODE = "n1"
DEADLINE = 10.0


def assigned(index: int) -> pb.Task:
    task = pb.Task(id=f"t{index:04d}", node_id=NODE, service_id="s1", slot=index + 1)
    task.desired_state = states.RUNNING  # type: ignore[assignment]
    task.service_annotations.name = "web"
    task.spec.container.image = "app:1"
    task.status.state = states.ASSIGNED  # type: ignore[assignment]
    return task


class StubManager:
    """One session; the assignments stream sends ``tasks`` in one message once ``go`` is set.
    Each status report is checked against the agent's task DB as it arrives: what the manager
    is told must already be on disk (read through a connection of its own)."""

    def __init__(self, tasks: list[pb.Task], db_path: Path) -> None:
        self.tasks = tasks
        self.db_path = db_path
        self.go = asyncio.Event()
        self.all_running = asyncio.Event()
        self.reports: list[rpb.UpdateTaskStatusRequest] = []
        self.not_on_disk: list[str] = []
        self.latest: dict[str, int] = {}

    def stream(self, target: str, method: str, request: bytes, **kwargs: object) -> AsyncIterator[bytes]:
        return self._session() if method == rpc.SESSION else self._assignments()

    async def _session(self) -> AsyncIterator[bytes]:
        yield rpb.SessionMessage(session_id="s1", heartbeat_period=60).SerializeToString()
        await asyncio.Event().wait()

    async def _assignments(self) -> AsyncIterator[bytes]:
        yield rpb.AssignmentsMessage(type=rpb.AssignmentsMessage.COMPLETE, results_in=1).SerializeToString()
        await self.go.wait()
        message = rpb.AssignmentsMessage(type=rpb.AssignmentsMessage.INCREMENTAL, applies_to=1, results_in=2)
        for task in self.tasks:
            message.changes.add(action=rpb.AssignmentChange.UPDATE, task=task)
        yield message.SerializeToString()
        await asyncio.Event().wait()

    async def call(self, target: str, method: str, request: bytes, **kwargs: object) -> bytes:
        if method == rpc.HEARTBEAT:
            return rpb.HeartbeatResponse(period=60).SerializeToString()
        if method == rpc.UPDATE_TASK_STATUS:
            report = rpb.UpdateTaskStatusRequest.FromString(request)
            self.reports.append(report)
            self._check_on_disk(report)
            for update in report.updates:
                self.latest[update.task_id] = update.status.state
            if len(self.latest) == len(self.tasks) and all(
                state == states.RUNNING for state in self.latest.values()
            ):
                self.all_running.set()
        return b""

    def _check_on_disk(self, report: rpb.UpdateTaskStatusRequest) -> None:
        with sqlite3.connect(str(self.db_path)) as reader:
            stored = dict(reader.execute("SELECT id, status FROM tasks").fetchall())
        for update in report.updates:
            raw = stored.get(update.task_id)
            if raw is None or pb.TaskStatus.FromString(raw).state != update.status.state:
                self.not_on_disk.append(f"{update.task_id}: {update.status.state}")


def stub_agent(tmp_path: Path, manager: StubManager) -> Agent:
    return Agent(
        node_id=NODE,
        state_dir=tmp_path,
        runtime=FakeRuntime(FakeOptions()),
        runtime_name="fake",
        transport=manager,  # type: ignore[arg-type]
        tls=lambda: TLSMaterial(b"", b"", b""),
        managers=["m1:2377"],
    )


async def run_to_running(agent: Agent, manager: StubManager) -> int:
    """Start ``agent``, have ``manager`` assign its tasks, wait for them all RUNNING, stop it;
    the asyncio tasks the running tasks held (those added from the assignment to then)."""
    await agent.start()
    try:
        await asyncio.wait_for(agent.connected.wait(), DEADLINE)
        before = len(asyncio.all_tasks())
        manager.go.set()
        await asyncio.wait_for(manager.all_running.wait(), DEADLINE)
        return len(asyncio.all_tasks()) - before
    finally:
        await agent.stop()


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


async def test_a_batch_of_tasks_costs_a_few_task_db_transactions_not_one_per_status(tmp_path: Path) -> None:
    """Twenty tasks stepping ASSIGNED -> RUNNING were 120 SQLite transactions (the spec, then
    each of five statuses, each committed alone): now the writes of each batch share one,
    every status the manager is told is on disk before it goes, and the last ones are there
    when the agent stops."""
    tasks = [assigned(index) for index in range(20)]
    manager = StubManager(tasks, tmp_path / "worker" / "tasks.db")
    agent = stub_agent(tmp_path, manager)
    transactions = Transactions()
    agent.db._db.set_trace_callback(transactions)
    await run_to_running(agent, manager)
    assert manager.not_on_disk == [], manager.not_on_disk
    assert transactions.count <= len(manager.reports) + 2, (transactions.count, len(manager.reports))
    with sqlite3.connect(str(tmp_path / "worker" / "tasks.db")) as reader:
        rows = reader.execute("SELECT status FROM tasks").fetchall()
    assert sorted(pb.TaskStatus.FromString(raw).state for (raw,) in rows) == [states.RUNNING] * len(tasks)


async def test_the_steps_on_the_way_to_running_go_with_running_not_each_in_a_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten tasks on an engine that answers at once (a hollow node's share of a big service):
    preparing, starting and running each took a call of their own as they happened, twice over
    through the engine gate (four calls, 28 updates); now the steps on the way wait for the
    state a task rests at and go with it. Every task's RUNNING is still reported. (A long
    interval: a loaded machine's stall must not end the wait for RUNNING.)"""
    monkeypatch.setattr(agent_module, "STATUS_BATCH_INTERVAL", 2.0)
    tasks = [assigned(index) for index in range(10)]
    manager = StubManager(tasks, tmp_path / "worker" / "tasks.db")
    agent = stub_agent(tmp_path, manager)
    await run_to_running(agent, manager)
    calls = len(manager.reports)
    updates = sum(len(report.updates) for report in manager.reports)
    assert calls <= 3 and updates <= 2 * len(tasks), (calls, updates)


async def test_a_running_task_holds_two_asyncio_tasks(tmp_path: Path) -> None:
    """Its controller and its wait on the engine. A running task held four: besides those, a
    second task racing the wait for every update, and the fake engine's task interpreting an
    image's default command, which only waits to be stopped (a thousand tasks per hollow
    process each cost their creation, scheduling and memory)."""
    tasks = [assigned(index) for index in range(10)]
    manager = StubManager(tasks, tmp_path / "worker" / "tasks.db")
    held = await run_to_running(stub_agent(tmp_path, manager), manager)
    assert held == 2 * len(tasks), held


async def test_a_task_without_placeholders_costs_no_template_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The placeholders' values (the service's labels copied, the task's name formatted) were
    worked out for every task assigned, then thrown away when none of its fields had a
    placeholder: 2% of a hollow process's samples."""
    worked_out: list[str] = []
    real = tasktemplates.values_for

    def counted(task: pb.Task, node_id: str, node: pb.NodeDescription) -> tasktemplates.TemplateValues:
        worked_out.append(task.id)
        return real(task, node_id, node)

    monkeypatch.setattr(tasktemplates, "values_for", counted)
    tasks = [assigned(index) for index in range(3)]
    tasks[0].spec.container.env.append("SLOT={{.Task.Slot}}")
    manager = StubManager(tasks, tmp_path / "worker" / "tasks.db")
    await run_to_running(stub_agent(tmp_path, manager), manager)
    assert worked_out == [tasks[0].id]
