"""One test per behaviour of raft-behaviours.md not already covered elsewhere (see TESTS.md).

Driven through the synchronous ``testnet.Network`` (etcd's ``network`` helper): no timers,
every Ready processed at once, links cut and message types ignored on demand.
"""

from __future__ import annotations

import random

import pytest
from shoal_store_raft.raft import (
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NotLeader,
    ProposalDropped,
    RaftCore,
    Role,
    Snapshot,
    SnapshotMeta,
    encode_conf,
)
from shoal_store_raft.raft.progress import ProgressState
from shoal_store_raft.raft.testnet import Network

NOCQ = Config(check_quorum=False, pre_vote=False)


def core(node: int = 1, voters: tuple[int, ...] = (1, 2, 3), **kw: object) -> RaftCore:
    return RaftCore(node, voters=voters, rng=random.Random(node), **kw)  # type: ignore[arg-type]


def drain(c: RaftCore) -> list[Message]:
    out: list[Message] = []
    while c.has_ready():
        rd = c.ready()
        out.extend(rd.messages)
        c.advance(rd)
    return out


def leader_of_3(config: Config = NOCQ) -> RaftCore:
    c = core(config=config)
    c.campaign()
    for m in drain(c):
        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            resp = MsgType.VOTE_RESP if m.type == MsgType.VOTE else MsgType.PRE_VOTE_RESP
            c.step(Message(resp, 1, m.to, m.term))
    assert c.role == Role.LEADER
    drain(c)
    return c


# ------------------------------------------------------------------ elections


def test_candidate_timeout_starts_a_new_election_at_a_new_term() -> None:
    c = core(config=NOCQ)
    for _ in range(2 * c.config.election_ticks):
        c.tick()
    assert c.role == Role.CANDIDATE
    term = c.term
    msgs = drain(c)
    assert {(m.type, m.to) for m in msgs} == {(MsgType.VOTE, 2), (MsgType.VOTE, 3)}
    assert all(m.index == c.last_index() and m.log_term == c.last_term() for m in msgs)
    for _ in range(2 * c.config.election_ticks):
        c.tick()
    assert c.role == Role.CANDIDATE and c.term > term and c.vote == 1


@pytest.mark.parametrize(
    ("grants", "rejects", "role"),
    [((2,), (), Role.LEADER), ((), (2, 3), Role.FOLLOWER), ((), (2,), Role.CANDIDATE)],
)
def test_leader_election_in_one_round_win_lose_or_undecided(
    grants: tuple[int, ...], rejects: tuple[int, ...], role: Role
) -> None:
    c = core(config=NOCQ)
    c.campaign()
    for g in grants:
        c.step(Message(MsgType.VOTE_RESP, 1, g, c.term))
    for r in rejects:
        c.step(Message(MsgType.VOTE_RESP, 1, r, c.term, reject=True))
    assert c.role == role


def test_candidate_falls_back_to_follower_on_append_from_leader_of_same_term() -> None:
    c = core(config=NOCQ)
    c.campaign()
    c.step(Message(MsgType.HEARTBEAT, 1, 2, c.term))
    assert c.role == Role.FOLLOWER and c.lead == 2


@pytest.mark.parametrize("pre_vote", [False, True])
def test_dueling_candidates_converge_to_one_leader(pre_vote: bool) -> None:
    net = Network([1, 2, 3], config=Config(pre_vote=pre_vote, check_quorum=False))
    net.cut.add(frozenset((1, 3)))
    net.nodes[1].campaign()
    net.nodes[3].campaign()
    net.stabilize()
    net.heal()
    for _ in range(60):
        net.tick_all()
        net.stabilize()
    assert len(net.leaders()) == 1
    assert len({c.term for c in net.nodes.values()}) == 1


def test_leader_cycle_every_node_can_be_elected_in_turn() -> None:
    net = Network([1, 2, 3], config=Config(check_quorum=False))
    for node in (1, 2, 3, 1):
        net.elect(node)
        assert net.leaders() == [node]


def test_campaign_while_leader_is_a_no_op() -> None:
    c = leader_of_3()
    term = c.term
    c.campaign()
    assert c.role == Role.LEADER and c.term == term


# ------------------------------------------------------------------ replication


def test_leader_starts_replication_with_prev_index_and_term() -> None:
    c = leader_of_3()
    for peer in (2, 3):
        c.step(Message(MsgType.APP_RESP, 1, peer, c.term, index=c.last_index()))
    drain(c)
    last, last_term = c.last_index(), c.last_term()
    c.propose(b"x")
    apps = [m for m in drain(c) if m.type == MsgType.APP]
    assert {m.to for m in apps} == {2, 3}
    assert all(m.index == last and m.log_term == last_term and m.entries[-1].data == b"x" for m in apps)


def test_follower_rejects_append_without_matching_prev_entry_and_hints() -> None:
    c = core(2, entries=[Entry(1, 1, b"a")], hard_state=HardState(1, 0, 0))
    c.step(Message(MsgType.APP, 2, 1, 1, log_term=1, index=5, entries=(Entry(6, 1, b"z"),)))
    (resp,) = drain(c)
    assert resp.reject and resp.index == 5 and resp.reject_hint == 1  # skip back to 1 at once


def test_follower_deletes_conflicting_suffix_but_never_matching_entries() -> None:
    log = [Entry(1, 1, b"a"), Entry(2, 1, b"b"), Entry(3, 1, b"c")]
    c = core(2, entries=log, hard_state=HardState(2, 0, 0))
    c.step(Message(MsgType.APP, 2, 1, 2, log_term=1, index=1, entries=(Entry(2, 1, b"b"),)))
    assert c.last_index() == 3  # matching prefix: no truncation
    c.step(Message(MsgType.APP, 2, 1, 2, log_term=1, index=1, entries=(Entry(2, 2, b"B"),)))
    assert c.last_index() == 2 and c.term_at(2) == 2


def test_leader_only_commits_entries_of_its_current_term_by_counting() -> None:
    """Figure 8: an old-term entry on a majority is not committed until a current-term one is."""
    c = RaftCore(
        1,
        voters=(1, 2, 3),
        rng=random.Random(1),
        config=NOCQ,
        hard_state=HardState(2, 1, 0),
        entries=[Entry(1, 2, b"old")],
    )
    c.campaign()
    c.step(Message(MsgType.VOTE_RESP, 1, 2, c.term))
    drain(c)
    # Follower 2 acknowledges only the old-term entry (the NOOP of this term has not arrived).
    c.step(Message(MsgType.APP_RESP, 1, 2, c.term, index=1))
    assert c.commit == 0
    c.step(Message(MsgType.APP_RESP, 1, 2, c.term, index=2))
    assert c.commit == 2  # committing the NOOP commits the old entry too (behaviour 17)


def test_proposal_on_follower_names_the_leader_and_without_leader_is_refused() -> None:
    net = Network([1, 2, 3])
    with pytest.raises(NotLeader) as none:
        net.nodes[2].propose(b"x")
    assert none.value.lead == 0
    net.elect(1)
    with pytest.raises(NotLeader) as info:
        net.nodes[2].propose(b"x")
    assert info.value.lead == 1  # the kernel forwards there


def test_reordered_duplicated_and_stale_append_responses_are_harmless() -> None:
    c = leader_of_3()
    for n in range(4):
        c.propose(b"%d" % n)
    drain(c)
    c.step(Message(MsgType.APP_RESP, 1, 2, c.term, index=c.last_index()))
    pr = c.progress(2)
    assert pr is not None
    match = pr.match
    c.step(Message(MsgType.APP_RESP, 1, 2, c.term, index=1))  # stale, arrives late
    c.step(Message(MsgType.APP_RESP, 1, 2, c.term, index=1, reject=True, reject_hint=0))
    assert pr.match == match and pr.state == ProgressState.REPLICATE


def test_node_with_unapplied_conf_change_does_not_campaign() -> None:
    conf = encode_conf(ConfState((1, 2, 3, 4)))
    c = core(entries=[Entry(1, 1, conf, EntryKind.CONF)], hard_state=HardState(1, 0, 1), applied=0)
    c.campaign()
    assert c.role == Role.FOLLOWER
    drain(c)  # applies it
    assert c.voters == (1, 2, 3, 4)
    c.campaign()
    assert c.role != Role.FOLLOWER


# ------------------------------------------------------------------ flow control


def replicating_leader(max_inflight: int = 3) -> RaftCore:
    c = leader_of_3(
        Config(check_quorum=False, pre_vote=False, max_inflight=max_inflight, max_entries_per_msg=1)
    )
    for peer in (2, 3):
        c.step(Message(MsgType.APP_RESP, 1, peer, c.term, index=c.last_index()))
    drain(c)
    return c


def test_full_inflight_window_sends_nothing_more() -> None:
    c = replicating_leader(3)
    c.ready()  # discard
    for n in range(6):
        c.propose(b"%d" % n)
    apps = [m for m in drain(c) if m.type == MsgType.APP and m.to == 2]
    assert len(apps) == 3 and pr_state(c, 2).paused()


def pr_state(c: RaftCore, peer: int) -> object:
    pr = c.progress(peer)
    assert pr is not None
    return pr


def test_acks_slide_the_window_and_heartbeat_responses_free_a_slot() -> None:
    c = replicating_leader(3)
    for n in range(6):
        c.propose(b"%d" % n)
    apps = [m for m in drain(c) if m.type == MsgType.APP and m.to == 2]
    c.step(Message(MsgType.APP_RESP, 1, 2, c.term, index=apps[0].entries[-1].index))
    assert [m.type for m in drain(c) if m.to == 2] == [MsgType.APP]  # one slot freed, one sent
    c.step(Message(MsgType.HEARTBEAT_RESP, 1, 2, c.term, index=c.last_index()))
    assert any(m.type == MsgType.APP and m.to == 2 for m in drain(c))


def test_probe_state_sends_one_append_per_heartbeat() -> None:
    c = leader_of_3(Config(check_quorum=False, pre_vote=False, max_entries_per_msg=1))
    drain(c)
    for n in range(3):
        c.propose(b"%d" % n)
    assert len([m for m in drain(c) if m.type == MsgType.APP and m.to == 2]) <= 1
    c.step(Message(MsgType.HEARTBEAT_RESP, 1, 2, c.term, index=0))
    assert len([m for m in drain(c) if m.type == MsgType.APP and m.to == 2]) == 1


def test_unreachable_report_moves_a_follower_from_replicate_to_probe() -> None:
    c = replicating_leader()
    pr = c.progress(2)
    assert pr is not None and pr.state == ProgressState.REPLICATE
    c.report_unreachable(2)
    assert pr.state == ProgressState.PROBE


def test_uncommitted_entries_limit_drops_proposals() -> None:
    c = leader_of_3(Config(check_quorum=False, pre_vote=False, max_uncommitted_bytes=10))
    c.propose(b"123456")
    with pytest.raises(ProposalDropped, match="uncommitted"):
        c.propose(b"123456")
    for peer in (2,):
        c.step(Message(MsgType.APP_RESP, 1, peer, c.term, index=c.last_index()))
    drain(c)
    assert c.commit == c.last_index()
    c.propose(b"123456")  # committed data no longer counts


# ------------------------------------------------------------------ pre-vote, check-quorum


def test_node_with_smaller_term_can_complete_election_with_pre_vote() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    for _ in range(40):
        net.tick(2)
        net.tick(3)
        net.stabilize()
    assert net.leaders() in ([2], [3], [1, 2], [1, 3])
    net.heal()
    for _ in range(40):
        net.tick_all()
        net.stabilize()
    assert len(net.leaders()) == 1 and net.leaders()[0] in (2, 3)


def test_stuck_higher_term_candidate_is_freed_with_check_quorum() -> None:
    net = Network([1, 2, 3], config=Config(pre_vote=False))
    net.elect(1)
    net.isolate(3)
    for _ in range(50):
        net.tick(3)  # keeps raising its term without pre-vote
    net.heal()
    net.queue.clear()
    stuck_term = net.nodes[3].term
    assert stuck_term > net.nodes[1].term
    for _ in range(60):
        net.tick_all()
        net.stabilize()
    assert len(net.leaders()) == 1 and all(c.term >= stuck_term for c in net.nodes.values())


# ------------------------------------------------------------------ reads


def test_read_index_confirms_leadership_with_a_heartbeat_quorum() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose(b"v")
    net.stabilize()
    net.isolate(1)
    net.nodes[1].read_index(b"r1")
    net.stabilize()
    assert net.read_states[1] == []  # no quorum: no answer
    net.heal()
    net.tick(1, net.config.heartbeat_ticks)  # heartbeats carry the pending context
    net.stabilize()
    assert [(r.context, r.index) for r in net.read_states[1]] == [(b"r1", net.nodes[1].commit)]


def test_follower_read_index_comes_from_the_leader_and_duplicates_are_safe() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[2].read_index(b"x")
    net.nodes[2].read_index(b"x")
    net.stabilize()
    got = net.read_states[2]
    assert got and all(r.context == b"x" and r.index == net.nodes[1].commit for r in got)


def test_new_leader_answers_read_index_only_after_committing_in_its_term() -> None:
    net = Network([1, 2, 3])
    net.ignored.add(MsgType.APP)  # the new leader's first entry does not get through
    net.elect(1)
    net.nodes[1].read_index(b"early")
    net.stabilize()
    assert net.nodes[1].is_leader() and net.nodes[1].commit == 0
    assert net.read_states[1] == []
    net.ignored.clear()
    net.tick(1, net.config.heartbeat_ticks)
    net.stabilize()
    assert [r.context for r in net.read_states[1]] == [b"early"]
    assert net.read_states[1][0].index >= 1 and net.nodes[1].term_at(net.read_states[1][0].index) == 1


# ------------------------------------------------------------------ leader transfer


@pytest.mark.parametrize("via", [1, 3])
def test_leader_transfer_to_up_to_date_node_whether_asked_on_leader_or_follower(via: int) -> None:
    net = Network([1, 2, 3])  # check-quorum and pre-vote on
    net.elect(1)
    net.nodes[via].transfer_leadership(2)
    net.stabilize()
    assert net.leaders() == [2]


def test_leader_transfer_to_slow_follower_catches_it_up_first_even_via_snapshot() -> None:
    net = Network([1, 2, 3], config=Config(snapshot_chunk_bytes=8))
    net.elect(1)
    net.isolate(3)
    for n in range(20):
        net.nodes[1].propose(b"value-%d" % n)
    net.stabilize()
    net.compact(1)
    net.heal()
    net.nodes[1].transfer_leadership(3)
    for _ in range(5):
        net.tick(1)
        net.stabilize()
    assert net.leaders() == [3]
    assert net.nodes[3].commit >= 21


def test_proposals_dropped_during_transfer_which_aborts_after_an_election_timeout() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.nodes[1].transfer_leadership(3)
    with pytest.raises(ProposalDropped, match="transferred"):
        net.nodes[1].propose(b"x")
    net.tick(1, net.config.election_ticks)
    assert net.nodes[1].lead_transferee == 0 and net.nodes[1].role == Role.LEADER
    net.nodes[1].propose(b"x")


@pytest.mark.parametrize("target", [1, 9])
def test_transfer_to_self_or_non_member_is_ignored(target: int) -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[1].transfer_leadership(target)
    assert net.nodes[1].lead_transferee == 0
    net.stabilize()
    assert net.leaders() == [1]


# ------------------------------------------------------------------ membership


def test_one_conf_change_at_a_time_and_new_leader_recomputes_pending() -> None:
    net = Network([1, 2, 3], config=Config(check_quorum=False))
    net.elect(1)
    net.ignored.add(MsgType.APP_RESP)  # the change reaches the followers but does not commit
    net.nodes[1].propose_conf_change(ConfChangeType.ADD_LEARNER, 4)
    with pytest.raises(ProposalDropped, match="already in progress"):
        net.nodes[1].propose_conf_change(ConfChangeType.ADD_LEARNER, 5)
    net.stabilize()
    net.ignored = {MsgType.APP}
    net.elect(2)
    # The new leader's log may hold an unapplied change: none until it applied all of it.
    assert net.leaders() == [2]
    with pytest.raises(ProposalDropped, match="already in progress"):
        net.nodes[2].propose_conf_change(ConfChangeType.REMOVE, 3)
    net.ignored.clear()
    net.tick(2, net.config.heartbeat_ticks)
    net.stabilize()
    assert net.nodes[2].learners == (4,)
    net.nodes[2].propose_conf_change(ConfChangeType.REMOVE, 3)


def test_learner_catches_up_never_votes_then_is_promoted() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    for n in range(5):
        net.nodes[1].propose(b"%d" % n)
    net.stabilize()
    net.add(4, RaftCore(4, voters=(), rng=random.Random(4)))
    net.nodes[1].propose_conf_change(ConfChangeType.ADD_LEARNER, 4)
    net.stabilize()
    assert net.nodes[4].learners == (4,) and [e.data for e in net.applied[4]][:5] == [
        b"0",
        b"1",
        b"2",
        b"3",
        b"4",
    ]
    net.tick(4, 5 * net.config.election_ticks)
    assert net.nodes[4].role == Role.FOLLOWER  # learners never campaign
    net.nodes[1].propose_conf_change(ConfChangeType.ADD_VOTER, 4)
    net.stabilize()
    net.heartbeat(1)  # the others apply the change once they learn it committed
    assert all(c.voters == (1, 2, 3, 4) for c in net.nodes.values())
    net.nodes[1].transfer_leadership(4)  # the promoted member can lead
    net.stabilize()
    assert net.leaders() == [4]


def test_removing_nodes_commits_through_the_smaller_quorum_and_removed_leader_steps_down() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose_conf_change(ConfChangeType.REMOVE, 3)
    net.stabilize()
    net.isolate(3)
    assert net.nodes[1].voters == (1, 2)
    net.nodes[1].propose(b"after")
    net.stabilize()
    net.heartbeat(1)
    assert net.applied[2][-1].data == b"after"
    net.nodes[1].propose_conf_change(ConfChangeType.REMOVE, 1)
    net.stabilize()
    assert net.nodes[1].role == Role.FOLLOWER and net.nodes[2].voters == (2,)
    for _ in range(30):
        net.tick(1)
        net.tick(2)
        net.stabilize()
    assert net.leaders() == [2]


# ------------------------------------------------------------------ snapshots


def lagging_net(chunk: int = 8) -> Network:
    net = Network([1, 2, 3], config=Config(snapshot_chunk_bytes=chunk, max_inflight=2))
    net.elect(1)
    net.isolate(3)
    for n in range(20):
        net.nodes[1].propose(b"value-%d" % n)
    net.stabilize()
    net.compact(1)
    net.heal()
    return net


def test_sending_a_snapshot_marks_it_pending_pauses_appends_and_streams_bounded_chunks() -> None:
    net = lagging_net()
    leader = net.nodes[1]
    leader.propose(b"more")
    net.process(1)
    net.queue = type(net.queue)(m for m in net.queue if m.to != 3)  # only what follows counts
    leader.report_unreachable(3)  # back to probing from its match, which was compacted away
    leader.step(Message(MsgType.HEARTBEAT_RESP, 1, 3, leader.term, index=0))
    msgs = [m for m in leader.ready().messages if m.to == 3]
    pr = leader.progress(3)
    assert (
        pr is not None
        and pr.state == ProgressState.SNAPSHOT
        and pr.pending_snapshot == leader.first_index() - 1
    )
    assert [m.type for m in msgs] == [MsgType.SNAP, MsgType.SNAP]  # window of 2 chunks
    assert all(m.snapshot is not None and len(m.snapshot.data) <= 8 for m in msgs)


def test_lost_snapshot_chunks_are_resent_and_install_resumes_replication() -> None:
    net = lagging_net()
    net.drop_rate = 0.3
    for _ in range(100):
        net.tick(1)
        net.stabilize()
        if net.nodes[3].commit == net.nodes[1].commit:
            break
    net.drop_rate = 0.0
    assert net.nodes[3].commit == net.nodes[1].commit
    net.nodes[1].propose(b"next")
    net.stabilize()
    net.heartbeat(1)
    pr = net.nodes[1].progress(3)
    assert pr is not None and pr.state == ProgressState.REPLICATE and net.applied[3][-1].data == b"next"


def test_no_snapshot_to_an_inactive_follower() -> None:
    net = lagging_net()
    leader = net.nodes[1]
    pr = leader.progress(3)
    assert pr is not None
    pr.recent_active = False
    pr.become_probe()
    pr.next = 1
    leader.propose(b"x")
    assert not any(m.type == MsgType.SNAP for m in leader.ready().messages)


def test_snapshot_install_restores_position_and_membership_and_stale_ones_are_ignored() -> None:
    follower = RaftCore(4, voters=(), rng=random.Random(4))
    meta = SnapshotMeta(10, 3, (1, 2, 3), (4,))
    from shoal_store_raft.raft import SnapshotChunk

    follower.step(Message(MsgType.SNAP, 4, 1, 3, snapshot=SnapshotChunk(meta, 0, b"abc", 6)))
    assert follower.commit == 0  # not installed before the last chunk
    follower.step(Message(MsgType.SNAP, 4, 1, 3, snapshot=SnapshotChunk(meta, 3, b"def", 6)))
    rd = follower.ready()
    assert rd.snapshot == Snapshot(meta, b"abcdef")
    follower.advance(rd)
    assert (follower.commit, follower.last_index(), follower.last_term()) == (10, 10, 3)
    assert follower.voters == (1, 2, 3) and follower.learners == (4,)
    stale = SnapshotMeta(5, 2, (1, 2, 3))
    follower.step(Message(MsgType.SNAP, 4, 1, 3, snapshot=SnapshotChunk(stale, 0, b"x", 1)))
    assert follower.ready().snapshot is None and follower.commit == 10


def test_a_follower_holding_a_snapshot_the_log_moved_past_gets_the_newer_one() -> None:
    """Found by memsim: the follower installed snapshot A, its acknowledgement was lost, and the
    leader compacted past A meanwhile. Resending A only earns acknowledgements of A, so the
    leader must move on to its newer snapshot rather than loop on A forever."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for n in range(10):
        net.nodes[1].propose(b"a%d" % n)
    net.stabilize()
    net.compact(1)
    first = net.nodes[1].first_index()
    net.heal()
    net.tick(1, net.config.heartbeat_ticks)
    while net.nodes[3].first_index() < first:  # deliver until 3 has installed snapshot A
        assert net.deliver_one(), "node 3 never received the snapshot"
    net.isolate(3)  # its acknowledgement is lost
    for n in range(10):
        net.nodes[1].propose(b"b%d" % n)
    net.stabilize()
    net.compact(1)  # the leader's log now starts after snapshot A
    assert net.nodes[1].first_index() > first
    net.heal()
    for _ in range(5):
        net.heartbeat(1)
    assert net.nodes[3].commit == net.nodes[1].commit
    pr = net.nodes[1].progress(3)
    assert pr is not None and pr.state == ProgressState.REPLICATE
    assert net.nodes[3].first_index() == net.nodes[1].first_index()  # it installed the newer one


def test_a_committed_membership_change_is_announced_at_once_a_plain_entry_is_not() -> None:
    """Followers learn a plain commit with the next append or heartbeat (no message of its own),
    but a membership change at once: found by memsim (a leader that removed itself stepped down
    after its one announcement was lost, leaving the follower waiting for its vote)."""
    net = Network([1, 2, 3])
    net.elect(1)
    leader = net.nodes[1]

    def commit_announcements() -> list[Message]:
        """What the leader sends once one follower acknowledged its last entry."""
        net.process(1)
        to_two = [m for m in net.queue if m.to == 2]
        net.queue.clear()
        for m in to_two:
            net.nodes[2].step(m)
        net.process(2)
        ack = [m for m in net.queue if m.to == 1]
        net.queue.clear()
        for m in ack:
            leader.step(m)
        assert leader.has_ready()
        rd = leader.ready()
        announced = [m for m in rd.messages if m.type == MsgType.APP and m.commit >= leader.commit]
        net.queue.extend(rd.messages)
        leader.advance(rd)
        return announced

    leader.propose(b"plain")
    assert commit_announcements() == []
    net.stabilize()
    leader.propose_conf_change(ConfChangeType.REMOVE, 3)
    assert {m.to for m in commit_announcements()} == {2, 3}


# ------------------------------------------------------------------ what an election logs


def test_an_election_and_a_leader_stepping_down_say_why_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """At scale an election is the first sign of a member held too long: the log must say
    which member stopped hearing from a leader, and which leader stopped hearing from a
    quorum, not only who won."""
    net = Network([1, 2, 3])
    net.elect(1)
    caplog.clear()
    with caplog.at_level("INFO", logger="shoal.store.raft"):
        net.isolate(1)
        for _ in range(2 * net.nodes[1].config.election_ticks):
            net.tick(1)
        for _ in range(3 * net.nodes[2].config.election_ticks):
            net.tick(2)
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("raft: leader 1 steps down at term 1: heard from 1 of 3 voters") for line in lines
    ), lines
    assert any(line.startswith("raft: member 2 heard from no leader for ") for line in lines), lines
    assert net.nodes[1].role != Role.LEADER
