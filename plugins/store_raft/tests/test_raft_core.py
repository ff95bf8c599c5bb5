"""The Raft core as a single member: elections, proposals, durability rules, restart, compaction."""

from __future__ import annotations

import random

import pytest
from shoal_store_raft.raft import (
    Config,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NotLeader,
    RaftCore,
    Role,
    Snapshot,
    SnapshotMeta,
)


def single(seed: int = 1, **kw: object) -> RaftCore:
    return RaftCore(1, voters=[1], rng=random.Random(seed), **kw)  # type: ignore[arg-type]


def drain(core: RaftCore) -> list[Entry]:
    """Process readies until idle; returns entries committed along the way."""
    committed: list[Entry] = []
    while core.has_ready():
        rd = core.ready()
        committed.extend(rd.committed)
        core.advance(rd)
    return committed


def test_starts_as_follower_with_no_leader() -> None:
    core = single()
    assert core.role == Role.FOLLOWER
    assert core.term == 0 and core.lead == 0
    with pytest.raises(NotLeader):
        core.propose(b"x")


def test_single_member_campaign_wins_at_once_and_commits_noop() -> None:
    core = single()
    core.campaign()
    assert core.role == Role.LEADER and core.term == 1 and core.lead == 1
    rd = core.ready()
    assert [(e.index, e.term, e.kind) for e in rd.entries] == [(1, 1, EntryKind.NOOP)]
    assert rd.must_sync and rd.hard_state == HardState(1, 1, 0)
    assert rd.committed == []  # not committed before it is durable
    assert rd.soft_state is not None and rd.soft_state.role == Role.LEADER
    core.advance(rd)
    assert core.commit == 1
    rd = core.ready()
    assert [e.index for e in rd.committed] == [1]
    assert rd.hard_state == HardState(1, 1, 1) and not rd.must_sync  # commit-only: no fsync needed
    core.advance(rd)
    assert not core.has_ready()


def test_single_member_elects_itself_by_ticking() -> None:
    core = single()
    for _ in range(2 * core.config.election_ticks):
        core.tick()
    assert core.role == Role.LEADER


def test_proposal_commits_only_after_advance_of_its_append() -> None:
    core = single()
    core.campaign()
    drain(core)
    i1 = core.propose(b"a")
    i2 = core.propose(b"b")
    assert (i1, i2) == (2, 3)
    rd = core.ready()
    assert [e.data for e in rd.entries] == [b"a", b"b"] and rd.must_sync
    assert rd.committed == [] and core.commit == 1
    core.advance(rd)
    assert [e.data for e in drain(core)] == [b"a", b"b"]
    assert core.commit == 3


def test_randomized_election_timeouts_stay_in_range_and_vary() -> None:
    seen = set()
    for seed in range(40):
        core = RaftCore(1, voters=[1, 2, 3], rng=random.Random(seed))
        ticks = 0
        while core.role == Role.FOLLOWER:
            core.tick()
            ticks += 1
        assert core.config.election_ticks <= ticks < 2 * core.config.election_ticks
        seen.add(ticks)
    assert len(seen) > 3


def test_restart_keeps_term_vote_and_recommits_through_new_term_noop() -> None:
    entries = [Entry(1, 1, b"", EntryKind.NOOP), Entry(2, 1, b"a"), Entry(3, 1, b"b")]
    core = single(hard_state=HardState(1, 1, 2), entries=entries)
    assert core.commit == 2 and core.term == 1
    assert [e.index for e in drain(core)] == [1, 2]  # replay up to the durable commit index
    core.campaign()
    assert core.term == 2
    committed = drain(core)
    assert [(e.index, e.term) for e in committed] == [(3, 1), (4, 2)]


def test_commit_beyond_log_is_clamped_on_restart() -> None:
    core = single(hard_state=HardState(1, 1, 9), entries=[Entry(1, 1, b"a")])
    assert core.commit == 1


def test_compact_drops_applied_prefix_and_keeps_terms() -> None:
    core = single()
    core.campaign()
    drain(core)
    for n in range(5):
        core.propose(b"%d" % n)
    drain(core)
    core.compact(Snapshot(SnapshotMeta(4, 1, (1,)), b"state"))
    assert core.first_index() == 5 and core.term_at(4) == 1 and core.term_at(3) is None
    assert core.term_at(6) == 1 and core.last_index() == 6
    core.propose(b"x")
    with pytest.raises(ValueError, match="not yet applied"):
        core.compact(Snapshot(SnapshotMeta(7, 1, (1,)), b""))


def test_higher_term_message_turns_leader_into_follower() -> None:
    core = RaftCore(1, voters=[1, 2, 3], rng=random.Random(0), config=Config(check_quorum=False))
    core.campaign()
    core.step(Message(MsgType.PRE_VOTE_RESP, 1, 2, core.term + 1))
    core.step(Message(MsgType.VOTE_RESP, 1, 2, core.term))
    assert core.role == Role.LEADER
    core.step(Message(MsgType.APP, 1, 3, core.term + 5, log_term=0, index=0))
    assert core.role == Role.FOLLOWER and core.term == 6 and core.lead == 3


def test_stale_term_messages_are_ignored() -> None:
    core = RaftCore(1, voters=[1, 2, 3], rng=random.Random(0), hard_state=HardState(5, 0, 0))
    core.step(Message(MsgType.APP, 1, 2, 3, entries=(Entry(1, 3, b"old"),)))
    assert core.last_index() == 0 and core.term == 5
    rd = core.ready()
    # The stale leader is told the newer term so it steps down.
    assert [(m.type, m.to, m.term) for m in rd.messages] == [(MsgType.APP_RESP, 2, 5)]


def test_vote_denied_to_less_up_to_date_log_and_one_vote_per_term() -> None:
    core = RaftCore(
        1,
        voters=[1, 2, 3],
        rng=random.Random(0),
        config=Config(check_quorum=False),
        hard_state=HardState(2, 0, 0),
        entries=[Entry(1, 2, b"x")],
    )
    core.step(Message(MsgType.VOTE, 1, 2, 3, log_term=1, index=5))  # older last term
    core.step(Message(MsgType.VOTE, 1, 3, 3, log_term=2, index=1))  # as up to date: granted
    core.step(Message(MsgType.VOTE, 1, 2, 3, log_term=2, index=1))  # already voted for 3
    votes = [(m.to, m.reject) for m in core.ready().messages]
    assert votes == [(2, True), (3, False), (2, True)]
    assert core.vote == 3 and core.term == 3


def test_pre_vote_does_not_bump_term() -> None:
    core = RaftCore(1, voters=[1, 2, 3], rng=random.Random(0))
    core.campaign()
    assert core.role == Role.PRE_CANDIDATE and core.term == 0
    msgs = core.ready().messages
    assert {(m.type, m.term) for m in msgs} == {(MsgType.PRE_VOTE, 1)}
    core.step(Message(MsgType.PRE_VOTE_RESP, 1, 2, 1))
    assert core.role == Role.CANDIDATE and core.term == 1 and core.vote == 1
