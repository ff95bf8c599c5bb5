"""Three (and five) Raft cores driven in-process through the synchronous test network."""

from __future__ import annotations

import pytest
from shoal_store_raft.raft import Config, MsgType, NotLeader, Role
from shoal_store_raft.raft.testnet import Network


def payloads(net: Network, node: int) -> list[bytes]:
    return [e.data for e in net.applied[node]]


def test_three_members_elect_exactly_one_leader_by_ticking() -> None:
    net = Network([1, 2, 3], seed=7)
    for _ in range(100):
        net.tick_all()
        net.stabilize()
        if net.leaders():
            break
    assert len(net.leaders()) == 1
    leader = net.leaders()[0]
    assert {c.term for c in net.nodes.values()} == {net.nodes[leader].term}
    assert all(c.lead == leader for c in net.nodes.values())


def test_replication_applies_same_entries_in_order_everywhere() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    assert net.leaders() == [1]
    indexes = [net.nodes[1].propose(b"v%d" % n) for n in range(20)]
    assert indexes == sorted(indexes) and len(set(indexes)) == 20
    net.stabilize()
    net.heartbeat(1)  # followers learn the last commit index from the next heartbeat
    expected = [b"v%d" % n for n in range(20)]
    for node in (1, 2, 3):
        assert payloads(net, node) == expected
        assert net.nodes[node].commit == indexes[-1]


def test_follower_refuses_proposals_and_names_the_leader() -> None:
    net = Network([1, 2, 3])
    net.elect(2)
    with pytest.raises(NotLeader) as info:
        net.nodes[1].propose(b"x")
    assert info.value.lead == 2


def test_entry_not_committed_without_a_quorum() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.nodes[1].propose(b"lost")
    net.stabilize()
    assert payloads(net, 1) == []


def test_isolated_leader_steps_down_and_its_uncommitted_entry_is_overwritten() -> None:
    net = Network([1, 2, 3], seed=3)
    net.elect(1)
    net.nodes[1].propose(b"committed")
    net.stabilize()
    net.isolate(1)
    net.nodes[1].propose(b"doomed")
    net.stabilize()
    # CheckQuorum: the old leader gives up after a full election timeout without a quorum
    # (peers count as active right after it was elected, so that takes up to two timeouts).
    net.tick(1, net.config.election_ticks)
    assert net.nodes[1].role == Role.LEADER
    net.tick(1, net.config.election_ticks)
    assert net.nodes[1].role == Role.FOLLOWER
    # Meanwhile the others' timers run out and they elect a new leader among themselves.
    for _ in range(3 * net.config.election_ticks):
        net.tick(2)
        net.tick(3)
        net.stabilize()
    assert len(net.leaders()) == 1 and net.leaders()[0] in (2, 3)
    new_leader = net.leaders()[0]
    net.nodes[new_leader].propose(b"new")
    net.stabilize()
    net.heal()
    net.tick_all(net.config.heartbeat_ticks)
    net.stabilize()
    for node in (1, 2, 3):
        assert payloads(net, node) == [b"committed", b"new"]
    terms = {net.nodes[n].term_at(net.nodes[n].last_index()) for n in (1, 2, 3)}
    assert len(terms) == 1


def test_pre_vote_keeps_a_rejoining_partitioned_node_from_deposing_the_leader() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    term = net.nodes[1].term
    net.isolate(3)
    net.tick(3, 10 * net.config.election_ticks)
    net.stabilize()
    assert net.nodes[3].term == term  # pre-vote rounds never raised its term
    net.heal()
    net.tick_all(net.config.heartbeat_ticks)
    net.stabilize()
    assert net.leaders() == [1] and net.nodes[1].term == term
    assert net.nodes[3].lead == 1


def test_without_pre_vote_a_rejoining_node_disrupts_the_term() -> None:
    net = Network([1, 2, 3], config=Config(pre_vote=False, check_quorum=False))
    net.elect(1)
    term = net.nodes[1].term
    net.isolate(3)
    net.tick(3, 2 * net.config.election_ticks)
    net.heal()
    net.stabilize()
    assert max(c.term for c in net.nodes.values()) > term  # the contrast that shows pre-vote matters


def test_leader_lease_rejects_votes_while_leader_is_alive() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.ignored.add(MsgType.PRE_VOTE)  # force a real vote through
    core3 = net.nodes[3]
    core3._become_candidate()  # a stuck candidate with a higher term
    core3._run_election(MsgType.VOTE, b"")
    net.stabilize()
    assert net.nodes[1].role == Role.LEADER and net.nodes[2].vote == 1


def test_lagging_follower_catches_up_through_a_snapshot() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for n in range(30):
        net.nodes[1].propose(b"%d" % n)
    net.stabilize()
    net.compact(1)
    assert net.nodes[1].first_index() > 2
    net.heal()
    for _ in range(5):
        net.tick_all(net.config.heartbeat_ticks)
        net.stabilize()
    assert net.nodes[3].commit == net.nodes[1].commit
    assert net.nodes[3].last_index() == net.nodes[1].last_index()
    net.nodes[1].propose(b"after")
    net.stabilize()
    net.heartbeat(1)
    assert payloads(net, 3)[-1] == b"after"


@pytest.mark.parametrize("seed", range(12))
def test_random_drops_and_partitions_keep_raft_safety(seed: int) -> None:
    """Seeded chaos: at most one leader per term, and every pair of nodes applied one history."""
    net = Network([1, 2, 3, 4, 5], seed=seed)
    rng = net.rng
    proposed = 0
    for step in range(400):
        action = rng.random()
        if action < 0.05:
            net.isolate(rng.choice(net.ids))
        elif action < 0.10:
            net.heal()
        elif action < 0.12:
            net.drop_rate = 0.2
        for leader in net.leaders():
            if rng.random() < 0.5:
                net.nodes[leader].propose(b"s%d-%d" % (step, proposed))
                proposed += 1
        net.tick_all()
        for _ in range(rng.randrange(1, 30)):
            if not net.deliver_one():
                break
    net.heal()
    for _ in range(60):
        net.tick_all()
        net.stabilize()
    terms = [t for t, _ in net.leader_history]
    assert len(terms) == len(set(terms)), f"two leaders in one term: {net.leader_history}"
    histories = [payloads(net, n) for n in net.ids]
    longest = max(histories, key=len)
    for h in histories:
        assert h == longest[: len(h)]
    assert len(net.leaders()) == 1
    leader = net.leaders()[0]
    assert all(net.nodes[n].commit == net.nodes[leader].commit for n in net.ids)
    assert len(longest) > 0
