"""The dispatcher does not send an agent back the statuses it reported (issue 18).

Each task's ACCEPTED, PREPARING, STARTING and RUNNING, written from its agent's own reports,
went back to that agent as a whole task in its assignment stream: at 10,000 replicas 40,000
task messages encoded, encrypted and sent by the leader and decoded by the agents, for
nothing an agent acts on. SwarmKit skips them too (``TasksEqualStable``). A change the agent
must see (desired state, spec) still goes."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
from shoal import states
from shoal.agent.agent import Agent
from shoal.proto import rpc_pb2 as rpb
from shoal.testing.cluster import InProcessCluster

REPLICAS = 12


async def test_an_agent_is_sent_each_task_once_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: each task came to its agent 4-5 times on its way to RUNNING."""
    updates: collections.Counter[str] = collections.Counter()
    apply = Agent._apply_assignments

    async def counted(self: Agent, message: rpb.AssignmentsMessage) -> Any:
        for change in message.changes:
            if change.action == rpb.AssignmentChange.UPDATE and change.HasField("task"):
                updates[change.task.id] += 1
        return await apply(self, message)

    monkeypatch.setattr(Agent, "_apply_assignments", counted)
    async with InProcessCluster(tmp_path, managers=1, workers=2) as cluster:
        await cluster.call("service.create", name="web", image="app:1", replicas=REPLICAS)

        async def running() -> bool:
            tasks = await cluster.tasks("web")
            return sum(t["State"] == "Running" for t in tasks) == REPLICAS

        await cluster.wait_until(running, f"{REPLICAS} running")
        leader = cluster.leader()
        assert leader is not None and leader.daemon.manager is not None
        on_workers = {
            t.id
            for t in leader.daemon.manager.store.view.tasks.all()
            if t.desired_state == states.RUNNING and updates[t.id]
        }
        assert on_workers, "no task reached a worker's agent"
        assert max(updates[t] for t in on_workers) == 1, dict(updates)

        await cluster.call("service.scale", service="web", replicas=0)  # desired state: still sent

        async def stopped() -> bool:
            return all(updates[t] >= 2 for t in on_workers)

        await cluster.wait_until(stopped, "every task's shutdown sent to its agent")
