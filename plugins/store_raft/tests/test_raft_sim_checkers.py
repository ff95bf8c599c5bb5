"""The checkers can fail: known bugs are caught by the simulation within a few seeds.

A simulation that never fails proves nothing; these tests break the system on purpose and
require the same harness CI runs to notice.
"""

from __future__ import annotations

from raftsim.cluster import SimConfig, Simulation, Violation
from raftsim.linearizability import INFINITY, Op, check_history
from shoal_store_raft.raft import RaftCore


class StaleReadCore(RaftCore):
    """Bug: ReadIndex answered at once, without confirming leadership with a quorum."""

    def _leader_read(self, context: bytes, requester: int) -> None:
        self._answer_read(context, self.commit, requester)


def first_failing_seed(limit: int, **kw: object) -> tuple[int, str] | None:
    for seed in range(limit):
        factory = kw.get("core_factory", RaftCore)
        cfg = SimConfig(members=3 if seed % 2 == 0 else 5, skip_sync=bool(kw.get("skip_sync", False)))
        try:
            Simulation(seed, cfg, factory).run()  # type: ignore[arg-type]
        except Violation as exc:
            return seed, str(exc)
    return None


def test_acknowledging_before_fsync_is_caught_within_60_seeds() -> None:
    found = first_failing_seed(60, skip_sync=True)
    assert found is not None, "a driver that never fsyncs went unnoticed"


def test_reads_without_leadership_confirmation_are_caught_by_the_linearizability_check() -> None:
    found = first_failing_seed(60, core_factory=StaleReadCore)
    assert found is not None, "stale ReadIndex reads went unnoticed"
    assert "not linearizable" in found[1]


def test_checker_rejects_a_stale_read() -> None:
    ops = [
        Op(1, "w", "k", 1, invoke=1, complete=2, status="ok"),
        Op(2, "r", "k", None, invoke=3, complete=4, status="ok"),
    ]
    ok, why = check_history(ops)
    assert not ok and "'k'" in why


def test_checker_accepts_concurrent_and_unknown_writes() -> None:
    ops = [
        Op(1, "w", "k", 1, invoke=1, complete=10, status="ok"),
        Op(2, "r", "k", 2, invoke=2, complete=3, status="ok"),  # sees the unknown write
        Op(3, "w", "k", 2, invoke=1, complete=INFINITY, status="unknown"),
        Op(4, "r", "k", 1, invoke=11, complete=12, status="ok"),
        Op(5, "w", "k", 9, invoke=5, complete=INFINITY, status="fail"),  # never happened
    ]
    assert check_history(ops) == (True, "")


def test_checker_rejects_a_value_that_was_never_written_or_read_back_in_time() -> None:
    ops = [
        Op(1, "w", "k", 1, invoke=1, complete=2, status="ok"),
        Op(2, "w", "k", 2, invoke=3, complete=4, status="ok"),
        Op(3, "r", "k", 1, invoke=5, complete=6, status="ok"),  # 2 overwrote 1 before the read began
    ]
    assert not check_history(ops)[0]
    failed_write_seen = [
        Op(1, "w", "k", 7, invoke=1, complete=2, status="fail"),
        Op(2, "r", "k", 7, invoke=3, complete=4, status="ok"),
    ]
    assert not check_history(failed_write_seen)[0]
