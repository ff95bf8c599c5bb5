"""The raft WAL on disk under big entries, with and without the snapshot trigger on WAL bytes.

A one-member ``RaftStore`` on real files drives an ``ObjectStore`` loaded with ``--tasks``
running tasks on ``--nodes`` nodes (put straight into the view, as ``bench_raft_snapshot``
does). It then commits ``--entries`` entries of ``--changes`` task updates each (a status
message changed: the size of an agent's status report), one write at a time, as the leader's
status flushes do at 100,000 replicas. Measured: the WAL's largest size on disk, the
snapshots taken, the longest stall of the loop (a 5 ms timer's lateness, wall clock and the
loop thread's CPU), the writes' latency, and the time a restart takes to open the store
(snapshot restore plus WAL replay) at the end.

    .venv/bin/python bench/bench_raft_wal_bytes.py [--snapshot-wal-bytes 67108864] [--entries 600]

``--snapshot-wal-bytes 0``: the trigger off (only the entry count, 10,000, as before).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_raft_snapshot import Probe, load  # the same store load and probe
from shoal.gcpolicy import NO_AUTOMATIC_FULL_COLLECTION
from shoal.store.memory import ObjectStore, Tx, copy
from shoal_store_raft import RaftStore
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.wal import list_segments


def wal_bytes(state: Path) -> int:
    total = 0
    for path in list_segments(state / "wal"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # released meanwhile
            pass
    return total


async def run(state: Path, args: argparse.Namespace) -> None:
    limit = args.snapshot_wal_bytes or (1 << 62)
    options = RaftOptions(snapshot_wal_bytes=limit)
    store = ObjectStore()
    raft = RaftStore(state, options)
    store.provider = raft
    await raft.start(store, bootstrap=True)
    load(store, args.tasks, args.nodes)
    task_ids = list(store.view.tasks.items)
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_AUTOMATIC_FULL_COLLECTION)
    probe = Probe()
    prober = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)
    probe.reset()
    latencies: list[float] = []
    biggest = snapshots = 0
    last_snapshot = raft.status()["snapshot_index"]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for entry in range(args.entries):
        first = entry * args.changes

        def report(tx: Tx, first: int = first) -> None:
            for n in range(first, first + args.changes):
                task_id = task_ids[n % len(task_ids)]
                current = tx.task(task_id)
                assert current is not None
                task = copy(current)
                task.status.message = f"report {n}"
                tx.update(task)

        started = time.perf_counter()
        await store.update(report)
        latencies.append(time.perf_counter() - started)
        biggest = max(biggest, wal_bytes(state))
        index = raft.status()["snapshot_index"]
        if index != last_snapshot:
            snapshots += 1
            last_snapshot = index
            print(
                f"  snapshot at index {index} durable after entry {entry + 1} "
                f"({(raft._wal.written if raft._wal else 0) / 1e6:.0f} MB written), WAL on disk then "
                f"{wal_bytes(state) / 1e6:.0f} MB",
                flush=True,
            )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    probe.stop()
    await prober
    while raft._snapshotting is not None:  # noqa: ASYNC110 # the provider has no event for it
        await asyncio.sleep(0.01)
    written = raft._wal.written if raft._wal is not None else 0
    core = raft._core
    in_memory = (
        sum(len(e.data) for e in core.entries_between(core.first_index(), core.last_index())) if core else 0
    )
    await raft.stop()
    on_disk = wal_bytes(state)
    latencies.sort()
    print(
        f"snapshot-wal-bytes {args.snapshot_wal_bytes or 'off'}: {args.entries} entries of {args.changes} "
        f"changes, {written / 1e6:.0f} MB written to the WAL in {wall:.1f} s (process CPU {cpu:.1f} s); "
        f"WAL on disk at most {biggest / 1e6:.0f} MB, {on_disk / 1e6:.0f} MB at the end; "
        f"{snapshots} snapshot(s) seen; the Raft log in memory {in_memory / 1e6:.0f} MB at the end, "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB; longest stall {probe.late * 1000:.0f} ms "
        f"(loop CPU {probe.cpu * 1000:.0f} ms); write median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, max {latencies[-1] * 1000:.0f} ms",
        flush=True,
    )
    restarted = ObjectStore()
    again = RaftStore(state, options)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await again.start(restarted, bootstrap=False)
    print(
        f"restart: open (snapshot restore + WAL replay) {(time.perf_counter() - wall0) * 1000:.0f} ms, "
        f"CPU {(time.process_time() - cpu0) * 1000:.0f} ms; {len(restarted.view.tasks)} tasks",
        flush=True,
    )
    await again.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=600)
    parser.add_argument("--changes", type=int, default=1000, help="task updates per entry")
    parser.add_argument("--snapshot-wal-bytes", type=int, default=64 << 20, help="0: off")
    parser.add_argument("--dir", default=None, help="state directory (default: a temporary one on disk)")
    args = parser.parse_args()
    print(f"pid {os.getpid()}, load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir or "/var/tmp") as tmp:
        await run(Path(tmp), args)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
