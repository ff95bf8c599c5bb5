"""Where one Raft write's time goes: timestamps in the client and the three managers.

Starts the 3-manager swarm of ``bench_ha.py`` (mutual TLS, fsync on), with
``bench/raft_legs/sitecustomize.py`` loaded into the three daemons: it stamps the write's path
(the leader reading the request, proposing, handing its appends to the sender and to gRPC, its
WAL write and fsync, a follower reading the append, writing and fsyncing it, handing its
acknowledgement to gRPC, the leader reading it, applying, answering) with
``time.perf_counter_ns()``, one clock for every process on the machine. The daemons' code is
not changed, only wrapped. The client writes one at a time over one kept connection
(``bench_ha.latency``'s write) and stamps each call's start and end.

For each write, every stamp from the three processes between the call's start and end is
taken in time order; the table gives each stamp's median time from the call's start, over the
writes where it occurs (in at least half of them), and the step from the row before. ``L`` is
the leader, ``Fq`` the follower whose acknowledgement of that write left first (the one the
commit waited for: the quorum-first sender's choice, ``spares.py``), ``Fs`` the other one,
which gets its appends in batches.

    .venv/bin/python bench/bench_raft_legs.py --ops 2000

The wrappers cost about a microsecond per stamp (some 15 per write), so the total is slightly
above an unwrapped run's; compare legs, not the total, with ``bench_etcd_reference.py``.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_ha

LEGS_DIR = Path(__file__).parent / "raft_legs"


def run(ops: int, stamps: Path) -> list[tuple[int, int]]:
    """Start the swarm with the stamps on, write ``ops`` times; the calls' (start, end)."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "SHOAL_BENCH_LEGS_DIR")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(LEGS_DIR), saved["PYTHONPATH"]) if p)
    os.environ["SHOAL_BENCH_LEGS_DIR"] = str(stamps)
    try:
        cluster = bench_ha.Cluster()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    calls = []
    try:
        leader = cluster.leader()
        client = leader.kept_client()
        for i in range(200):  # warm-up
            leader.write(i, client)
        for i in range(ops):
            start = time.perf_counter_ns()
            leader.write(i, client)
            calls.append((start, time.perf_counter_ns()))
        (stamps / "leader").write_text(str(leader.proc.pid if leader.proc else 0))
    finally:
        cluster.close()  # the daemons write their last stamps as they exit
    return calls


def load(stamps: Path) -> tuple[int, list[tuple[int, int, str]]]:
    leader = int((stamps / "leader").read_text())
    events = []
    for path in stamps.glob("*.txt"):
        pid = int(path.stem)
        for line in path.read_text().splitlines():
            t, name = line.split()
            events.append((int(t), pid, name))
    events.sort()
    return leader, events


def legs(calls: list[tuple[int, int]], leader: int, events: list[tuple[int, int, str]]) -> None:
    times = [t for t, _, _ in events]
    windows = []
    for start, end in calls:
        lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
        windows.append((start, end, events[lo:hi]))
    offsets: dict[str, list[float]] = collections.defaultdict(list)
    for start, end, evs in windows:
        # Per write, the follower whose acknowledgement left first is the one the commit waited
        # for (``Fq``); the other (``Fs``) got it in a batch or answered later.
        acks = [pid for _, pid, name in evs if pid != leader and name == "to_grpc"]
        role = {leader: "L"}
        for pid in dict.fromkeys(acks + [pid for _, pid, _ in evs if pid != leader]):
            role[pid] = "Fq" if len(role) == 1 else "Fs"
        seen: collections.Counter[str] = collections.Counter()
        for t, pid, name in evs:
            key = f"{role[pid]} {name}"
            seen[key] += 1
            offsets[f"{key}#{seen[key]}"].append((t - start) / 1000)
        offsets["client got the answer#1"].append((end - start) / 1000)
    enough = {k: v for k, v in offsets.items() if len(v) >= len(windows) / 2}
    rows = sorted(enough.items(), key=lambda kv: statistics.median(kv[1]))
    print(f"{len(windows)} writes; medians in microseconds from the client's call")
    print("| stamp | median us | step | in % of writes |")
    print("|---|---|---|---|")
    previous = 0.0
    for key, values in rows:
        med = statistics.median(values)
        print(f"| {key} | {med:.0f} | +{med - previous:.0f} | {100 * len(values) / len(windows):.0f} |")
        previous = med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="writes measured (after 200 warm-ups)")
    args = parser.parse_args()
    print(f"machine: {bench_ha.machine()}; 1-minute load average at the start: {os.getloadavg()[0]:.2f}")
    stamps = Path(tempfile.mkdtemp(prefix="shoal-raft-legs-"))
    try:
        calls = run(args.ops, stamps)
        leader, events = load(stamps)
        lat = sorted((end - start) / 1e6 for start, end in calls)
        print(
            f"client latency: median {statistics.median(lat):.3f} ms, p90 {lat[int(len(lat) * 0.9)]:.3f} ms"
        )
        legs(calls, leader, events)
    finally:
        shutil.rmtree(stamps, ignore_errors=True)
    print(f"1-minute load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
