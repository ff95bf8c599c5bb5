"""A follower installing a leader's snapshot of ``--tasks`` tasks while the leader heartbeats
every ``--heartbeat-ms``: how many heartbeats it answers before it acknowledges the snapshot,
and how fast (before 94efab6 it answered none until the install ended).

    .venv/bin/python bench/bench_raft_install_heartbeats.py [--tasks 100000] [--reps 3]

Run it against another tree with ``PYTHONPATH=<tree>/core/src:<tree>/plugins/store_raft/src``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_raft_snapshot import load  # the same store load
from shoal.store.memory import ObjectStore
from shoal_store_raft import RaftStore
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.provider import MEMBER_FILE, format_id
from shoal_store_raft.raft import HardState, Message, MsgType, SnapshotChunk, SnapshotMeta
from shoal_store_raft.wal import WAL

ME, LEADER = 0x1234, 0x2


async def one_install(state: Path, data: bytes, heartbeat: float) -> str:
    WAL.create(state / "wal", SnapshotMeta(0, 0, (ME, LEADER, 0x3)), HardState(1, 0, 0)).close()
    (state / MEMBER_FILE).write_text(json.dumps({"raft_id": format_id(ME)}))
    sent: dict[bytes, float] = {}
    answered: dict[bytes, float] = {}
    acked: list[float] = []
    done = asyncio.Event()

    def send(messages: Sequence[Message]) -> None:
        now = time.perf_counter()
        for m in messages:
            if m.type == MsgType.HEARTBEAT_RESP:
                answered.setdefault(m.context, now)
            elif m.type == MsgType.APP_RESP and m.index == 50:
                acked.append(now)
                done.set()

    follower = RaftStore(state, RaftOptions(tick_ms=60_000), send=send)
    await follower.start(ObjectStore(), bootstrap=False)
    meta = SnapshotMeta(50, 1, (ME, LEADER, 0x3))
    begun = time.perf_counter()
    follower.step(Message(MsgType.SNAP, ME, LEADER, 1, snapshot=SnapshotChunk(meta, 0, data, len(data))))
    n = 0
    while not done.is_set():
        context = b"hb%d" % n
        n += 1
        sent[context] = time.perf_counter()
        follower.step(Message(MsgType.HEARTBEAT, ME, LEADER, 1, commit=50, index=50, context=context))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), heartbeat)
    await follower.stop()
    ack = acked[0]
    early = [answered[c] - sent[c] for c in sent if c in answered and answered[c] < ack]
    late = [ack - sent[c] for c in sent if c not in answered or answered[c] >= ack]
    return (
        f"acknowledged after {(ack - begun) * 1000:.0f} ms; {len(sent)} heartbeats meanwhile, "
        f"{len(early)} answered before the acknowledgement (slowest {max(early, default=0) * 1000:.0f} ms), "
        f"{len(late)} only with it (the longest waited {max(late, default=0) * 1000:.0f} ms)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--heartbeat-ms", type=float, default=100.0)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}", flush=True)
    leader = ObjectStore()
    load(leader, args.tasks, 1000)
    data = leader.snapshot()
    gc.collect()
    gc.freeze()
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            print(
                f"install {rep + 1}: {await one_install(Path(tmp), data, args.heartbeat_ms / 1000)}",
                flush=True,
            )
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
