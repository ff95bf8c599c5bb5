"""Benchmark the raft store provider: proposals/s and commit latency, fsync on.

Single bootstrapped member, real WAL on disk, entries of ``--size`` bytes. Two workloads:
one sequential proposer, and ``--concurrency`` proposers at once (group commit shares one
fsync among the proposals that arrive while the previous batch is being written). Latency is
measured around ``await store.propose(...)``, i.e. durable + applied.

    .venv/bin/python bench/bench_store_raft.py [--count 3000] [--concurrency 32] [--size 128]

Prints markdown table rows for docs/benchmarks.md and the command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shoal_store_raft import RaftStore
from shoal_store_raft.options import RaftOptions


class NullMachine:
    """Keeps only a count: the benchmark measures the log, not a state machine."""

    def __init__(self) -> None:
        self.applied = 0

    def apply(self, index: int, entry: bytes) -> None:
        self.applied += 1

    def snapshot(self) -> bytes:
        return self.applied.to_bytes(8, "big")

    def restore(self, index: int, data: bytes) -> None:
        self.applied = int.from_bytes(data, "big")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    workdir: Path, count: int, concurrency: int, size: int
) -> list[tuple[str, float, list[float], int]]:
    store = RaftStore(workdir, RaftOptions())
    await store.start(NullMachine(), bootstrap=True)
    payload = b"x" * size
    results = []
    for label, workers in (("sequential", 1), (f"{concurrency} concurrent", concurrency)):
        for _ in range(50):  # warm-up
            await store.propose(payload)
        latencies: list[float] = []
        per_worker = max(1, count // workers)
        syncs_before = store.status()["wal_syncs"]

        async def worker(lat: list[float] = latencies, n: int = per_worker) -> None:
            for _ in range(n):
                t0 = time.perf_counter()
                await store.propose(payload)
                lat.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - start
        syncs = store.status()["wal_syncs"]
        assert isinstance(syncs, int) and isinstance(syncs_before, int)
        results.append((label, len(latencies) / elapsed, latencies, syncs - syncs_before))
    await store.stop()
    return results


def raw_fdatasync(directory: Path, n: int = 300) -> list[float]:
    """The floor: a 128-byte append + fdatasync on the same file system, no store at all."""
    path = directory / "raw-fsync"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 128)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="proposals per workload")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--size", type=int, default=128, help="entry size in bytes")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the WAL (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-raft-", dir=args.dir) as tmp:
        raw = raw_fdatasync(Path(tmp))
        results = asyncio.run(run(Path(tmp) / "store", args.count, args.concurrency, args.size))
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print()
    print("| store | workload | entry | proposals/s | p50 commit | p99 commit | fsyncs |")
    print("|---|---|---|---|---|---|---|")
    for label, rate, lat, syncs in results:
        print(
            f"| raft (1 member, fsync) | {label} | {args.size} B | {rate:,.0f} | "
            f"{statistics.median(lat) * 1000:.3f} ms | {percentile(lat, 0.99) * 1000:.3f} ms | {syncs:,} |"
        )
    print(
        f"| (floor) raw append + fdatasync | sequential | 128 B | {len(raw) / sum(raw):,.0f} | "
        f"{statistics.median(raw) * 1000:.3f} ms | {percentile(raw, 0.99) * 1000:.3f} ms | {len(raw):,} |"
    )


if __name__ == "__main__":
    main()
