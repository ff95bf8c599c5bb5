"""A small service's RUNNING reports each go as they happen (issue 18 item 4).

Each RUNNING is a call of its own when the containers start apart; the agent's pacer let 3
calls go at once after a quiet spell, so the fourth RUNNING of a 4-replica service waited for
a token (25 ms in 1 of 8 podman creates of 4). Now ``STATUS_BATCH_BURST`` calls may go at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from shoal import states
from shoal.agent import agent as agent_module
from shoal.testing.dispatchprobe import until
from shoal.testing.stubmanager import StubManager, assigned_task, stub_agent
from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.runtime import FakeRuntime

#: Tasks of the service, each starting apart from the others (its RUNNING a call of its own).
REPLICAS = 4


async def test_each_running_of_a_small_service_goes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "STATUS_BATCH_INTERVAL", 60.0)  # a held call never goes
    tasks = [assigned_task("n1", index) for index in range(REPLICAS)]
    manager = StubManager(tasks, per_message=1, gap=0.2)  # the tasks start 0.2 s apart
    agent = stub_agent(manager, tmp_path, FakeRuntime(FakeOptions()), "n1")
    await agent.start()
    try:
        manager.go.set()
        # before: the fourth call waited for a token, a minute here
        await until(manager.all_running.is_set, "every RUNNING reported", deadline=20.0)
    finally:
        await agent.stop()
    assert [report.updates[-1].status.state for report in manager.reports] == [states.RUNNING] * REPLICAS
