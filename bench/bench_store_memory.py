"""A manager's store at scale, in one process: its bytes per task and per node, and how long a
snapshot install's steps hold the loop with the apply listeners a manager keeps.

``rss``: the view (``ReadView``) loaded with ``--tasks`` running tasks on ``--nodes`` nodes (as
``bench_raft_snapshot`` loads it), then the six apply-listener indexes a leader keeps (the
reaper's slots, the live slots, node loads, service counts, task endpoints, used addresses),
each built with ``restored()``; RSS after each (``/proc/self/statm``, after a collection). Run it
twice with other sizes for the bytes per task or per node (``--tasks 0`` for nodes alone).

``steps``: a follower's store of ``--tasks``/2 tasks, with those listeners, restores a snapshot
of ``--tasks`` tasks with ``ObjectStore.restore_steps`` (what the raft store installs a
leader's snapshot with): the longest step and the last step, in loop-thread CPU, and the total.
``--only-derived``: only the three a former leader keeps (``ObjectStore.derived``).

    .venv/bin/python bench/bench_store_memory.py rss [--tasks 100000] [--nodes 1000]
    .venv/bin/python bench/bench_store_memory.py steps [--tasks 100000] [--only-derived]

Run it against another tree with ``PYTHONPATH=<tree>/core/src:<tree>/plugins/store_raft/src``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_raft_snapshot import load  # the same store load
from shoal.gcpolicy import NO_AUTOMATIC_FULL_COLLECTION
from shoal.manager.liveslots import LiveSlots
from shoal.manager.netendpoints import TaskEndpoints
from shoal.manager.netobjects import UsedAddresses
from shoal.manager.nodeload import NodeLoads
from shoal.manager.reaper import TaskReaper
from shoal.manager.servicecounts import ServiceTaskCounts
from shoal.store.memory import ObjectStore

DERIVED = (ServiceTaskCounts, TaskEndpoints, UsedAddresses)
LEADER_ONLY = (LiveSlots, NodeLoads, TaskReaper)


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_rss(tasks: int, nodes: int) -> None:
    start = rss()
    store = ObjectStore()
    load(store, tasks, nodes)
    viewed = rss()
    kept: list[Any] = []
    for make in DERIVED + LEADER_ONLY:
        index = make(store)
        index.restored()
        kept.append(index)
    indexed = rss()
    per_task = f", {(indexed - start) / tasks:.0f} B/task in all" if tasks else ""
    print(
        f"{tasks} tasks on {nodes} nodes: view {(viewed - start) / 1e6:.1f} MB, the six indexes "
        f"{(indexed - viewed) / 1e6:.1f} MB, total {(indexed - start) / 1e6:.1f} MB{per_task}"
    )


def measure_steps(tasks: int, reps: int, only_derived: bool) -> None:
    leader = ObjectStore()
    load(leader, tasks, 1000)
    leader.applied_index = 5
    data = leader.snapshot()
    follower = ObjectStore()
    load(follower, tasks // 2, 1000)
    for make in DERIVED:
        follower.derived(make)
    if not only_derived:
        for make in LEADER_ONLY:
            index = make(follower)
            index.restored()
            follower.listen(index)
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_AUTOMATIC_FULL_COLLECTION)  # the daemon's policy
    for rep in range(reps):
        clock = time.thread_time
        worst = last = 0.0
        steps = 0
        begun = clock()
        restoring = follower.restore_steps(leader.applied_index + rep + 1, data)
        while True:
            started = clock()
            try:
                next(restoring)
            except StopIteration:
                last = clock() - started
                worst = max(worst, last)
                break
            worst = max(worst, clock() - started)
            steps += 1
        print(
            f"rep {rep + 1}: {steps} steps, longest {worst * 1000:.1f} ms, last {last * 1000:.1f} ms, "
            f"total {(clock() - begun) * 1000:.0f} ms (loop-thread CPU)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("rss", "steps"))
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--only-derived", action="store_true")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}", flush=True)
    if args.what == "rss":
        measure_rss(args.tasks, args.nodes)
    else:
        measure_steps(args.tasks, args.reps, args.only_derived)


if __name__ == "__main__":
    main()
