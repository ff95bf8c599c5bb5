"""Quorum-first replication (``shoal_store_raft.spares``): who gets new entries at once, who in
batches, and how the quorum set follows the acknowledgements. Logic only, on a real event loop;
the process tests (core/tests/test_ha_*.py) run every three-manager scenario with it on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.raft import Entry, Message, MsgType
from shoal_store_raft.spares import QuorumFirstSender

LEADER = 1
DELAY = 0.05


def app(to: int, *indexes: int) -> Message:
    entries = tuple(Entry(index=i, term=1, data=b"x") for i in indexes)
    return Message(
        MsgType.APP, to=to, frm=LEADER, term=1, index=(indexes[0] - 1) if indexes else 0, entries=entries
    )


def ack(frm: int, index: int, reject: bool = False) -> Message:
    return Message(MsgType.APP_RESP, to=LEADER, frm=frm, term=1, index=index, reject=reject)


def heartbeat(to: int) -> Message:
    return Message(MsgType.HEARTBEAT, to=to, frm=LEADER, term=1)


class Wire:
    """What the sender handed to the network, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, list[Message]]] = []

    def __call__(self, peer: int, batch: list[Message]) -> None:
        self.sent.append((peer, list(batch)))

    def take(self) -> list[tuple[int, list[int]]]:
        """(peer, entry indexes per message, flattened) for each batch sent since the last take."""
        out = [(peer, [e.index for m in batch for e in m.entries]) for peer, batch in self.sent]
        self.sent.clear()
        return out


def send_round(sender: QuorumFirstSender, voters: tuple[int, ...], *indexes: int) -> None:
    sender.send({p: [app(p, *indexes)] for p in voters if p != LEADER}, leader_id=LEADER, voters=voters)


def three_voters_quorum_on_2() -> tuple[Wire, QuorumFirstSender]:
    """Three voters after a first round that member 2 acknowledged: 3 is the spare."""
    wire = Wire()
    sender = QuorumFirstSender(wire, 10.0)
    send_round(sender, (1, 2, 3), 1)
    sender.acknowledged(ack(2, 1))
    wire.take()
    return wire, sender


async def until(condition: Callable[[], object], within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_three_voters_first_acknowledger_gets_entries_at_once_the_other_in_batches() -> None:
    wire = Wire()
    sender = QuorumFirstSender(wire, DELAY)
    voters = (1, 2, 3)
    send_round(sender, voters, 1)
    assert wire.take() == [(2, [1]), (3, [1])], "no quorum set yet: everyone at once"
    sender.acknowledged(ack(3, 1))
    sender.acknowledged(ack(2, 1))
    assert sender.quorum_set == {3}
    send_round(sender, voters, 2)
    send_round(sender, voters, 3)
    assert wire.take() == [(3, [2]), (3, [3])], "the spare's appends are held"
    await until(lambda: wire.sent)
    assert wire.take() == [(2, [2, 3])], "then sent in one batch, in order"


async def test_a_non_append_message_flushes_the_held_appends_first() -> None:
    wire, sender = three_voters_quorum_on_2()
    voters = (1, 2, 3)
    send_round(sender, voters, 2)
    sender.send({3: [heartbeat(3)]}, leader_id=LEADER, voters=voters)
    assert [(p, [m.type for m in b]) for p, b in wire.sent] == [
        (2, [MsgType.APP]),
        (3, [MsgType.APP, MsgType.HEARTBEAT]),
    ]
    sender.close()


async def test_empty_appends_are_never_held() -> None:
    wire, sender = three_voters_quorum_on_2()
    voters = (1, 2, 3)
    sender.send({3: [app(3)]}, leader_id=LEADER, voters=voters)
    assert wire.take() == [(3, [])]


async def test_a_silent_quorum_member_is_replaced_by_the_spare_that_acknowledges() -> None:
    wire = Wire()
    sender = QuorumFirstSender(wire, DELAY)
    voters = (1, 2, 3)
    send_round(sender, voters, 1)
    sender.acknowledged(ack(2, 1))
    wire.take()
    send_round(sender, voters, 2)  # 2 never answers (it died)
    await until(lambda: any(p == 3 for p, _ in wire.sent))
    assert wire.take() == [(2, [2]), (3, [2])]
    sender.acknowledged(ack(3, 2))
    assert sender.quorum_set == {3}
    send_round(sender, voters, 3)
    assert wire.take() == [(3, [3])], "the new entries go to the member that answers, at once"
    sender.close()


async def test_stale_and_rejected_acknowledgements_do_not_pick_the_quorum_set() -> None:
    wire = Wire()
    sender = QuorumFirstSender(wire, DELAY)
    voters = (1, 2, 3)
    send_round(sender, voters, 5)
    sender.acknowledged(ack(2, 4))  # older than the newest entries
    sender.acknowledged(ack(3, 5, reject=True))
    sender.acknowledged(ack(9, 5))  # not a voter
    assert sender.quorum_set == frozenset()
    sender.acknowledged(ack(3, 5))
    assert sender.quorum_set == {3}


async def test_five_voters_keep_two_at_once_and_two_spares() -> None:
    wire = Wire()
    sender = QuorumFirstSender(wire, 10.0)
    voters = (1, 2, 3, 4, 5)
    send_round(sender, voters, 1)
    for peer in (4, 2, 5, 3):
        sender.acknowledged(ack(peer, 1))
    assert sender.quorum_set == {2, 4}
    wire.take()
    send_round(sender, voters, 2)
    assert sorted(wire.take()) == [(2, [2]), (4, [2])]
    sender.close()
    assert wire.take() == []


@pytest.mark.parametrize(
    ("delay", "leader_id", "voters"),
    [(0.0, LEADER, (1, 2, 3)), (DELAY, 0, (1, 2, 3)), (DELAY, LEADER, (1, 2)), (DELAY, LEADER, (1, 2, 3, 4))],
    ids=["delay-0", "not-leader", "two-voters", "four-voters"],
)
async def test_nothing_is_held_without_a_spare(delay: float, leader_id: int, voters: tuple[int, ...]) -> None:
    """Off, not the leader, or no follower beyond the quorum's need: everyone at once. (Four
    voters need two of the three followers, so they do have one spare.)"""
    wire = Wire()
    sender = QuorumFirstSender(wire, delay)
    followers = [p for p in voters if p != LEADER]
    sender.send({p: [app(p, 1)] for p in followers}, leader_id=leader_id, voters=voters)
    for p in followers:
        sender.acknowledged(ack(p, 1))
    wire.take()
    sender.send({p: [app(p, 2)] for p in followers}, leader_id=leader_id, voters=voters)
    sent = sorted(wire.take())
    if voters == (1, 2, 3, 4) and delay and leader_id:
        assert sent == [(2, [2]), (3, [2])], "4 voters: the first two acknowledgers, one spare held"
    else:
        assert sent == [(p, [2]) for p in followers]
    sender.close()


async def test_membership_change_sends_what_is_held_and_picks_again() -> None:
    wire = Wire()
    sender = QuorumFirstSender(wire, 10.0)
    send_round(sender, (1, 2, 3), 1)
    sender.acknowledged(ack(2, 1))
    wire.take()
    send_round(sender, (1, 2, 3), 2)
    assert wire.take() == [(2, [2])]
    sender.send({4: [app(4, 1, 2)]}, leader_id=LEADER, voters=(1, 2, 3, 4))
    assert wire.take() == [(3, [2]), (4, [1, 2])], "held appends go out before the new voter's"
    assert sender.quorum_set == frozenset()


def test_the_option_defaults_on_and_zero_turns_it_off() -> None:
    assert RaftOptions().spare_batch_ms == 20
    assert RaftOptions.parse({"spare-batch-ms": "0"}).spare_batch_ms == 0
    with pytest.raises(ValueError, match="spare-batch-ms must be 0 \\(off\\) or a positive integer"):
        RaftOptions.parse({"spare-batch-ms": "-1"})
    with pytest.raises(ValueError, match="tick-ms must be a positive integer"):
        RaftOptions.parse({"tick-ms": "0"})
