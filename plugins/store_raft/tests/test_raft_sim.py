"""Deterministic simulation of 3- and 5-member clusters under faults, over thousands of seeds.

Each seed runs a whole cluster (see ``raftsim.cluster``) with message loss, duplication,
delay, reordering, partitions, crashes that lose unsynced writes, restarts, membership
changes, leadership transfers and chunked snapshot installs, checking the safety invariants
after every step and the client history for linearizability at the end. A failing seed prints
the one-line command that replays it.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback

import pytest
from raftsim.cluster import SimConfig, Simulation, Violation, run_seed

REPRO = ".venv/bin/pytest plugins/store_raft/tests/test_raft_sim.py --raft-seed {seed}"


def _run(seed: int) -> str | None:
    """One seed; None when it passed, else the failure with its reproduction command."""
    try:
        run_seed(seed)
    except Exception as exc:  # a Violation, or a crash of the core itself
        kind = "invariant violated" if isinstance(exc, Violation) else "error"
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return f"seed {seed} failed ({kind}): {detail}\n  reproduce: {REPRO.format(seed=seed)}"
    return None


def test_simulated_clusters_stay_safe_and_linearizable(request: pytest.FixtureRequest) -> None:
    only = request.config.getoption("--raft-seed", default=None)
    if only is not None:
        sim = Simulation(only, SimConfig(members=3 if only % 2 == 0 else 5))
        try:
            sim.run()
        except Exception:
            print("\n".join(sim.log[-40:]))  # the last faults before the failure
            raise
        return
    start = int(request.config.getoption("--raft-seed-start", default=0))
    count = int(request.config.getoption("--raft-seeds", default=2000))
    seeds = range(start, start + count)
    workers = min(os.cpu_count() or 1, 4)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        failures = [f for f in pool.imap_unordered(_run, seeds, chunksize=25) if f is not None]
    assert not failures, f"{len(failures)} of {count} seeds failed:\n" + "\n".join(sorted(failures)[:10])


def test_a_seed_replays_exactly() -> None:
    a, b = run_seed(11), run_seed(11)
    assert [str(op) for op in a.ops] == [str(op) for op in b.ops] and a.log == b.log
    assert a.committed == b.committed
