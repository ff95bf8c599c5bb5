"""A follower passes the leader's ``service ps`` reply in pieces on as the leader wrote it.

A CLI talking to a follower asks it as it asks the leader (``compact`` and ``pieces``); the
follower forwards the call. It parsed the leader's 16.5 MB reply of 100,000 rows and encoded
it again for its CLI (~0.5 s of its CPU the CLI waited for), and the marks after each piece
were lost on the way, so the CLI parsed the whole line at its end. Now the leader's text is
written as it came (issue 18 item 2). In-process cluster: real daemons, raft store, memory
transport.
"""

from __future__ import annotations

import json
from pathlib import Path

from shoal import yieldingjson
from shoal.testing.cluster import InProcessCluster

REPLICAS = 5


async def _written(result: object) -> bytes:
    return b"".join([part async for part in yieldingjson.line_parts({"result": result})])


async def test_a_follower_passes_the_leader_s_pieces_on_as_written(tmp_path: Path) -> None:
    async with InProcessCluster(tmp_path, managers=3, workers=1) as cluster:
        await cluster.call("service.create", name="web", image="app:1", replicas=REPLICAS)
        await cluster.wait_for_running("web", REPLICAS)
        leader = cluster.leader()
        assert leader is not None
        follower = next(m for m in cluster.managers() if m is not leader)
        params = {"services": ["web"], "compact": True, "pieces": True}
        relayed = await follower.call("service.ps", **params)
        assert isinstance(relayed, yieldingjson.Encoded)
        line = await _written(relayed)
        assert line.count(b"\r") == 2  # after the head and after the one piece, as written
        from_leader = json.loads(await _written(await leader.call("service.ps", **params)))
        from_follower = json.loads(line)
        assert from_follower["result"].pop("now") <= from_leader["result"].pop("now")
        assert from_follower == from_leader and len(from_leader["result"]["rows"]) == REPLICAS
        # Without pieces (an older CLI, in-process callers): a parsed value, as before.
        whole = await follower.call("service.ps", services=["web"], compact=True)
        assert isinstance(whole, dict) and len(whole["rows"]) == REPLICAS
