"""Whole clusters of real ``RaftStore`` members over the kernel's ``StoreNetwork`` and the
memory transport, deterministic per seed on a virtual-time loop (see ``memsim.cluster``).

Each seed: 3 members (even seeds) or 5 (odd), each a ``RaftStore`` on real WAL and snapshot
files with the kernel's ``ObjectStore`` as its state machine, its bytes carried by
``StoreNetwork`` over ``MemoryTransport`` servers holding internal-CA manager certificates.
Clients write and read through ``ObjectStore.update`` while the seed's rng loses, duplicates,
delays and reorders messages, partitions and heals, crashes members abruptly and reopens a new
``RaftStore`` on the same directory, adds (join + ``add_member``) and removes members and
transfers leadership. After every loop iteration: one leader per term, commit indexes never go
back, no two members apply different entries at one index (and restored snapshots hold what
the applied entries give). At the end: the client history is linearizable and every member of
the final group holds the leader's state. Crashes here keep every written byte (the process
dies between loop callbacks); crashes that lose unsynced writes are the core simulation's
(``test_raft_sim.py``) and ``test_raft_crash.py``'s.

A failing seed prints ``.venv/bin/pytest plugins/store_raft/tests/test_raft_memnet_sim.py
--memsim-seed N``; ``--memsim-seeds`` and ``--memsim-seed-start`` run a longer soak.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback

import pytest
from memsim.checks import Violation
from memsim.cluster import MemSimulation, run_seed

REPRO = ".venv/bin/pytest plugins/store_raft/tests/test_raft_memnet_sim.py --memsim-seed {seed}"


def _run(seed: int) -> str | None:
    """One seed; None when it passed, else the failure with its reproduction command."""
    try:
        run_seed(seed)
    except Exception as exc:  # a Violation, or an error of the provider or the kernel's code
        kind = "invariant violated" if isinstance(exc, Violation) else "error"
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return f"seed {seed} failed ({kind}): {detail}\n  reproduce: {REPRO.format(seed=seed)}"
    return None


def test_memnet_clusters_stay_safe_linearizable_and_converge(request: pytest.FixtureRequest) -> None:
    only = request.config.getoption("--memsim-seed")
    if only is not None:
        sim = MemSimulation(only)
        try:
            sim.run()
        except Exception:
            print("\n".join(sim.log[-60:]))  # the last faults before the failure
            raise
        return
    start = int(request.config.getoption("--memsim-seed-start"))
    count = int(request.config.getoption("--memsim-seeds"))
    seeds = range(start, start + count)
    workers = min(os.cpu_count() or 1, 4)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        failures = [f for f in pool.imap_unordered(_run, seeds, chunksize=5) if f is not None]
    assert not failures, f"{len(failures)} of {count} seeds failed:\n" + "\n".join(sorted(failures)[:10])


def _trace(sim: MemSimulation) -> list[str]:
    return sim.log + [str(op) for op in sim.ops]


def test_a_memnet_seed_replays_exactly() -> None:
    a, b = run_seed(7), run_seed(7)
    assert _trace(a) == _trace(b)
    assert a.network.stats == b.network.stats and sum(a.network.stats.values()) > 100
    assert sorted(a.history.entries) == sorted(b.history.entries)


def test_the_simulation_exercises_what_it_claims() -> None:
    """Over a handful of seeds every kind of fault and operation really happened."""
    seen: set[str] = set()
    ok_ops = 0
    for seed in range(8):
        sim = run_seed(seed)
        ok_ops += sum(op.status == "ok" for op in sim.ops)
        for line in sim.log:
            seen.add(line.split(" ", 2)[1])
        seen.update(k for k, v in sim.network.stats.items() if v)
    for what in (
        "crash",
        "restart",
        "partition",
        "faults",
        "added",
        "removed",
        "transferred",
        "dropped",
        "duplicated",
        "cut",
    ):
        assert what in seen, f"no {what!r} in 8 seeds"
    assert ok_ops > 100


def test_a_broken_invariant_is_reported_with_its_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: a member that applies a different entry is caught and named."""
    from memsim import checks

    real = checks.RecordingMachine.apply
    corrupted: list[int] = []

    def corrupt(self: checks.RecordingMachine, index: int, entry: bytes) -> None:
        if self.who.startswith("m2") and not corrupted:
            corrupted.append(index)
            entry = entry + b"\x00"
        real(self, index, entry)

    monkeypatch.setattr(checks.RecordingMachine, "apply", corrupt)
    failure = _run(4)
    assert failure is not None and f"applied a different entry at index {corrupted[0]}" in failure
    assert REPRO.format(seed=4) in failure
