"""After a leader change an agent reports only the statuses the new leader's record lacks
(issue 18).

Every agent sent every status it held with each reopened session: after an election at 1,000
nodes, a thousand calls to the new leader at its busiest, telling it nothing new. The complete
set of assignments the leader sends first carries each task with its stored status; the agent
now sends just the ones that differ from what it last saw (updates an old leader took but
never committed). Here the store is made to lack one task's last report, and the manager
restarts: that task's status comes back, and no other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from shoal import states
from shoal.manager.dispatcher import Dispatcher
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import PeerIdentity
from shoal.store.memory import Tx, copy
from shoal.testing.cluster import InProcessCluster

REPLICAS = 6
#: What the store says of the task whose last report it lacks.
STALE = "a report the old leader never committed"


async def test_a_reopened_session_reports_only_what_the_leader_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[str] = []  # task IDs of every status update the dispatchers received
    update = Dispatcher.update_task_status

    async def counted(dispatcher: Dispatcher, request: bytes, peer: PeerIdentity | None) -> Any:
        reported.extend(u.task_id for u in rpb.UpdateTaskStatusRequest.FromString(request).updates)
        return await update(dispatcher, request, peer)

    monkeypatch.setattr(Dispatcher, "update_task_status", counted)
    async with InProcessCluster(tmp_path, managers=1, workers=2) as cluster:
        await cluster.call("service.create", name="web", image="app:1", replicas=REPLICAS)
        await cluster.wait_for_running("web", REPLICAS)
        manager = cluster.leader()
        assert manager is not None and manager.daemon.manager is not None
        store = manager.daemon.manager.store
        running = [t for t in store.view.tasks.all() if t.status.state == states.RUNNING]
        assert len(running) == REPLICAS
        lacking = running[0].id

        def forget_last_report(tx: Tx) -> None:
            task = copy(tx.task(lacking))
            task.status.message = STALE
            tx.update(task)

        await store.update(forget_last_report)
        reported.clear()
        await cluster.restart(manager)  # a new leader: every agent reopens its session

        await cluster.wait_until(lambda: lacking in reported, "the lacking status reported again")
        assert set(reported) == {lacking}, f"{len(set(reported))} statuses sent for 1 the leader lacked"
        leader = await cluster.wait_until(cluster.leader, "the leader")
        view = leader.daemon.manager.store.view
        await cluster.wait_until(
            lambda: view.tasks.get(lacking).status.message != STALE, "the report written again"
        )
