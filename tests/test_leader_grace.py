"""A new leader gives every node its grace before marking it Down (issue 18).

After an election a thousand sessions reopen at once and their first heartbeats queue behind
the herd; a leader that downed them on the usual three-period deadline replaced all their
tasks and fed the next election. The dispatcher starts when its manager becomes leader, so a
node lost right after the start shows the start-up grace: two grace periods from the start."""

from __future__ import annotations

import time
from pathlib import Path

from shoal.testing.cluster import InProcessCluster, _rows

PERIOD = 2.0
GRACE_MULTIPLIER = 3


async def test_a_new_leader_does_not_mark_a_node_down_within_its_grace(tmp_path: Path) -> None:
    async with InProcessCluster(
        tmp_path, managers=1, workers=1, init_options={"dispatcher_heartbeat": f"{PERIOD:g}s"}
    ) as cluster:
        leader = cluster.leader()
        assert leader is not None and leader.daemon.manager is not None
        dispatcher = leader.daemon.manager.dispatcher
        assert dispatcher is not None
        started_at = dispatcher._started_at
        await cluster.kill(cluster.node("w1"))
        # Before, the node went Down three periods after its last heartbeat (6 s).
        await cluster.wait_until(lambda: _down(cluster), "w1 Down", deadline=60)
        down_after = time.monotonic() - started_at
        assert down_after >= PERIOD * GRACE_MULTIPLIER * 2, (
            f"w1 Down {down_after:.1f} s after the leader started"
        )


async def _down(cluster: InProcessCluster) -> bool:
    rows = await cluster.call("node.ls")
    return any(row.get("Hostname") == "w1" and row.get("Status") == "Down" for row in _rows(rows))
