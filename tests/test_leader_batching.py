"""The leader works on thousands of tasks in bounded pieces (issue 18).

At 1,000 hollow nodes and 10,000 replicas the leader's event loop ran the orchestrator's,
scheduler's and dispatcher's work in long synchronous stretches and missed Raft heartbeats:
elections, sessions reopening all at once, nodes marked Down. These tests pin the pieces:
bounded store transactions and one task watch for every assignment stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from shoal import states
from shoal.manager import orchestrator, scheduler_driver
from shoal.proto import objects_pb2 as pb
from shoal.testing.cluster import InProcessCluster

REPLICAS = 3000


async def test_thousands_of_tasks_are_created_and_placed_in_bounded_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3,000 replicas were one store entry of 3,000 creations and then one of 3,000 scheduler
    decisions: seconds of the leader's loop building, replicating and applying each."""
    async with InProcessCluster(tmp_path, managers=1, workers=0) as cluster:
        leader = cluster.leader()
        assert leader is not None and leader.daemon.manager is not None
        store = leader.daemon.manager.store
        assert store.provider is not None
        propose = store.provider.propose
        sizes: list[int] = []

        async def counted(entry: bytes) -> Any:
            sizes.append(len(pb.StoreBatch.FromString(entry).actions))
            return await propose(entry)

        monkeypatch.setattr(store.provider, "propose", counted)
        await cluster.call(
            "service.create",
            name="many",
            image="app:1",
            replicas=REPLICAS,
            constraints=["node.labels.zone==nowhere"],
        )

        def decided() -> bool:  # every task created and given "no suitable node" by the scheduler
            tasks = [t for t in store.view.tasks.all() if t.desired_state == states.RUNNING]
            return len(tasks) == REPLICAS and all(
                t.status.state == states.PENDING and t.status.err for t in tasks
            )

        await cluster.wait_until(decided, f"{REPLICAS} tasks decided", deadline=120)
        # An orchestrator piece and a scheduler piece may share one group commit.
        limit = orchestrator.MAX_CREATES_PER_COMMIT + scheduler_driver.MAX_PLACEMENTS_PER_COMMIT + 10
        assert max(sizes) <= limit, f"a store entry of {max(sizes)} changes (entries: {sizes})"


async def test_assignment_streams_share_one_task_watch(tmp_path: Path) -> None:
    """Each node's assignment stream held a watch on every task event, so every task change
    was queued for and checked by every node's stream (1,000 x 50,000 at 10,000 tasks); one
    watch routes each event to its node's stream only, however many nodes are connected."""
    async with InProcessCluster(tmp_path, managers=1, workers=2) as cluster:
        leader = cluster.leader()
        assert leader is not None and leader.daemon.manager is not None
        store = leader.daemon.manager.store

        def task_watches() -> int:
            return sum(1 for w in store._watches if w.kinds is not None and "task" in w.kinds)

        before = task_watches()
        await cluster.join("w3")
        await cluster.join("w4")
        await cluster.call("service.create", name="spread", image="app:1", replicas=5)
        await cluster.wait_until(lambda: _running_on(cluster, 5), "5 tasks running on 5 nodes")
        assert task_watches() == before, "a new node's assignment stream added a store watch on every task"


async def _running_on(cluster: InProcessCluster, nodes: int) -> bool:
    running = [t for t in await cluster.tasks("spread") if t["State"] == "Running"]
    return len(running) == 5 and len({t["Node"] for t in running}) == nodes
