"""What one task costs the agent (issue 18: a hollow fleet spent ~1.2 ms of CPU per task).

A real agent on the fake runtime, against a stub manager that assigns it tasks and records the
status reports; each test counts one kind of work per task and fails on the code before the
change that cut it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from shoal import states, tasktemplates
from shoal.agent import agent as agent_module
from shoal.agent.agent import Agent
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.testing import stubmanager
from shoal.testing.stubmanager import StubManager, Transactions, assigned_task
from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.runtime import FakeRuntime

NODE = "n1"
DEADLINE = 10.0


def assigned(index: int) -> pb.Task:
    return assigned_task(NODE, index)


def stub_manager(tasks: list[pb.Task], db_path: Path) -> tuple[StubManager, list[str]]:
    """A stub manager that checks each status report against the agent's task DB as it
    arrives (what the manager is told must already be on disk, read through a connection of
    its own); the reports found ahead of the DB."""
    not_on_disk: list[str] = []

    def check(report: rpb.UpdateTaskStatusRequest) -> None:
        with sqlite3.connect(str(db_path)) as reader:
            stored = dict(reader.execute("SELECT id, status FROM tasks").fetchall())
        for update in report.updates:
            raw = stored.get(update.task_id)
            if raw is None or pb.TaskStatus.FromString(raw).state != update.status.state:
                not_on_disk.append(f"{update.task_id}: {update.status.state}")

    return StubManager(tasks, on_report=check), not_on_disk


def stub_agent(tmp_path: Path, manager: StubManager) -> Agent:
    return stubmanager.stub_agent(manager, tmp_path, FakeRuntime(FakeOptions()), NODE)


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


async def test_a_batch_of_tasks_costs_a_few_task_db_transactions_not_one_per_status(tmp_path: Path) -> None:
    """Twenty tasks stepping ASSIGNED -> RUNNING were 120 SQLite transactions (the spec, then
    each of five statuses, each committed alone): now the writes of each batch share one,
    every status the manager is told is on disk before it goes, and the last ones are there
    when the agent stops."""
    tasks = [assigned(index) for index in range(20)]
    manager, not_on_disk = stub_manager(tasks, tmp_path / "worker" / "tasks.db")
    agent = stub_agent(tmp_path, manager)
    transactions = Transactions()
    agent.db._db.set_trace_callback(transactions)
    await run_to_running(agent, manager)
    assert not_on_disk == [], not_on_disk
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
    manager = StubManager(tasks)
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
    manager = StubManager(tasks)
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
    manager = StubManager(tasks)
    await run_to_running(stub_agent(tmp_path, manager), manager)
    assert worked_out == [tasks[0].id]


async def test_tasks_removed_one_by_one_cost_one_task_db_transaction_each_not_two(tmp_path: Path) -> None:
    """A node's tasks shut down and removed one message at a time (``service rm`` of a big
    service): each task's SHUTDOWN report commits its writes, and its delete used to be a
    transaction of its own a flush delay later (two per task). The deletes now wait for a
    later flush. What the DB keeps at the end is unchanged: nothing."""
    tasks = [assigned(index) for index in range(10)]
    manager = StubManager(tasks, per_message=1, gap=0.06)
    agent = stub_agent(tmp_path, manager)
    await agent.start()
    try:
        await asyncio.wait_for(agent.connected.wait(), DEADLINE)
        manager.go.set()
        await asyncio.wait_for(manager.all_running.wait(), DEADLINE)
        transactions = Transactions()
        agent.db._db.set_trace_callback(transactions)
        reports = len(manager.reports)
        manager.stop.set()
        async with asyncio.timeout(DEADLINE):
            while agent.tasks_held:  # noqa: ASYNC110 - no event for "none held"
                await asyncio.sleep(0.01)
        removal_reports = len(manager.reports) - reports
    finally:
        await agent.stop()
    assert transactions.count <= removal_reports + 3, (transactions.count, removal_reports)
    with sqlite3.connect(str(tmp_path / "worker" / "tasks.db")) as reader:
        assert reader.execute("SELECT id FROM tasks").fetchall() == []
