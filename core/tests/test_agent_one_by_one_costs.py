"""What a node's tasks cost the agent when they come one by one (issue 18: 100,000 replicas on
1,000 nodes put ~100 tasks on each node, about one per scheduler batch).

A real agent on the fake runtime, against a stub manager that sends each task in an assignment
message of its own, a little apart; each test counts one kind of work and fails on the code
before the change that cut it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import NoReturn

from shoal.agent.agent import Agent
from shoal.agent.controller import TaskController
from shoal.hollow.status import status_of
from shoal.roles.runtime import ContainerRef
from shoal.testing import stubmanager
from shoal.testing.stubmanager import StubManager, assigned_task
from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.runtime import FakeRuntime

NODE = "n1"
DEADLINE = 20.0
#: Seconds between two assignment messages: longer than the agent's status interval (50 ms),
#: short enough for a fast test.
GAP = 0.04


def one_by_one(count: int) -> StubManager:
    return StubManager([assigned_task(NODE, index) for index in range(count)], per_message=1, gap=GAP)


def stub_agent(tmp_path: Path, manager: StubManager) -> Agent:
    return stubmanager.stub_agent(manager, tmp_path, FakeRuntime(FakeOptions()), NODE)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_tasks_removed_one_by_one_share_the_sweeps_for_strays(tmp_path: Path) -> None:
    """Each sweep for stray containers lists every container of the node. One went after each
    removal that left none under way: a node's tasks removed one message at a time (``service
    rm`` of a huge service) listed the node once per task, quadratic in the tasks it held. Now
    removals share a sweep per ``STRAY_SWEEP_AFTER_REMOVAL_INTERVAL`` (1 s)."""
    manager = one_by_one(15)
    agent = stub_agent(tmp_path, manager)
    listings: list[str] = []
    listed = agent.runtime.list_containers

    async def counted(node_id: str) -> list[ContainerRef]:
        listings.append(node_id)
        return await listed(node_id)

    agent.runtime.list_containers = counted  # type: ignore[method-assign]
    await agent.start()
    try:
        await asyncio.wait_for(agent.connected.wait(), DEADLINE)
        manager.go.set()
        await asyncio.wait_for(manager.all_running.wait(), DEADLINE)
        manager.stop.set()
        await asyncio.wait_for(manager.all_down.wait(), DEADLINE)
        before = len(listings)
        began = time.monotonic()
        await until(lambda: agent.tasks_held == 0, "every task removed")
        removing = time.monotonic() - began
        await until(lambda: len(listings) > before, "a sweep after the removals")
        sweeps = len(listings) - before
    finally:
        await agent.stop()
    # 15 removals over ~0.6 s: one sweep at the first, then at most one a second (and the last).
    assert sweeps <= 3 + int(removing), (sweeps, removing)


class Unwalkable(dict[str, TaskController]):
    """An agent's controllers that must not be walked."""

    def values(self) -> NoReturn:
        raise AssertionError("the fleet's status walked every task of a node")

    def items(self) -> NoReturn:
        raise AssertionError("the fleet's status walked every task of a node")

    def __iter__(self) -> NoReturn:
        raise AssertionError("the fleet's status walked every task of a node")


async def test_the_fleet_status_counts_running_tasks_without_walking_them(tmp_path: Path) -> None:
    """A hollow process rewrites its status file twice a second; it walked every controller
    of every node to count the running ones (50,000 per process at 100,000 replicas: 3% of its
    samples at 20,000). The agent now keeps the count as statuses change, removals included."""
    manager = StubManager([assigned_task(NODE, index) for index in range(12)])
    agent = stub_agent(tmp_path, manager)
    node = SimpleNamespace(agent=agent, profile=SimpleNamespace(hostname="hollow-00000"))
    await agent.start()
    try:
        await asyncio.wait_for(agent.connected.wait(), DEADLINE)
        manager.go.set()
        await asyncio.wait_for(manager.all_running.wait(), DEADLINE)
        held = agent.controllers
        agent.controllers = Unwalkable(held)
        status = status_of([node])  # type: ignore[list-item]
        agent.controllers = held
        assert (status.running, status.tasks, status.running_by_node) == (12, 12, {"hollow-00000": 12})
        manager.stop.set()
        await asyncio.wait_for(manager.all_down.wait(), DEADLINE)
        assert agent.tasks_running == 0
    finally:
        await agent.stop()
