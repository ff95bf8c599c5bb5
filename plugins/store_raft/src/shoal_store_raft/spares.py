"""Quorum-first replication: new entries go at once only to the followers a commit waits for.

A leader of N voters commits an entry once N // 2 followers hold it. With three managers that
is ONE follower; the second one's copy decides nothing, yet receiving, writing, fsyncing and
acknowledging every entry costs it as much CPU as the follower that counts, and its
acknowledgement costs the leader a receive. When the managers share cores (several managers on
one host, or busy hosts), that redundant work runs exactly when the leader and the counting
follower need the CPU.

So the leader keeps a *quorum set*: the ``N // 2`` voters that acknowledged the newest entries
first. Append messages carrying entries go to them at once. The other voters (the *spares*)
get theirs held for at most ``delay`` seconds and then in one batch: one receive, one fsync and
one acknowledgement for everything sent meanwhile. Nothing else is held: heartbeats, votes,
snapshots, empty appends and any message that is not an append flush the peer's held appends
first, in order. Raft never depended on when a message arrives (the network may delay any), so
this is safe; what it changes:

- a spare lags by up to ``delay`` (its stale reads, a linearizable read through it, a
  leadership transfer to it wait up to that much longer);
- if a follower of the quorum set stops answering, commits wait for the spares' next batch (at
  most ``delay``), whose acknowledgements then make them the quorum set;
- an election after the leader dies picks a member of the quorum set (it has every committed
  entry), as Raft's up-to-date check always did.

With ``delay`` 0, or fewer than two followers beyond the quorum's need, every follower gets
every message at once, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from shoal_store_raft.raft import Message, MsgType

SendBatch = Callable[[int, list[Message]], None]


def _holdable(batch: Sequence[Message]) -> bool:
    return all(m.type == MsgType.APP and m.entries for m in batch)


class QuorumFirstSender:
    """Sits between the provider's Ready handling and the kernel's network (one per leader
    term is fine; ``reset`` on leadership or membership changes)."""

    def __init__(self, send: SendBatch, delay: float) -> None:
        self._send = send
        self.delay = delay
        #: Appends held for a spare, and the timer that sends them.
        self._held: dict[int, list[Message]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        #: The followers whose acknowledgements the newest entries wait for.
        self.quorum_set: frozenset[int] = frozenset()
        #: The newest entry index sent to the quorum set, and who acknowledged it, in order.
        self._round_index = 0
        self._round_acks: list[int] = []
        self._voters: frozenset[int] = frozenset()
        #: The voters as the core last gave them, to notice a change without building a set.
        self._voters_given: tuple[int, ...] = ()

    def send(self, by_peer: dict[int, list[Message]], *, leader_id: int, voters: tuple[int, ...]) -> None:
        """Send (or hold) one Ready's messages, grouped by peer. ``leader_id`` is this member
        when it leads, else 0 (then nothing is held)."""
        if not leader_id and not self._held:  # a follower's answers: nothing to hold or count
            for peer, batch in by_peer.items():
                self._send(peer, batch)
            return
        if voters != self._voters_given:  # a tuple compare per Ready, a set only on a change
            self._voters_given = voters
            if frozenset(voters) != self._voters:
                self._voters = frozenset(voters)
                self.reset()
        voter_set = self._voters
        need = len(voter_set) // 2
        spares_possible = (
            self.delay > 0
            and leader_id in voter_set
            and len(voter_set) - 1 > need
            and len(self.quorum_set) == need
            and self.quorum_set <= voter_set
        )
        for peer, batch in by_peer.items():
            if spares_possible and peer not in self.quorum_set and _holdable(batch):
                self._hold(peer, batch)
                continue
            held = self._take_held(peer)
            if held:
                batch = held + batch
            if peer in voter_set and (peer in self.quorum_set or not spares_possible):
                self._new_round(batch)
            self._send(peer, batch)

    def acknowledged(self, message: Message) -> None:
        """An APP_RESP arrived: the first ``N // 2`` voters to acknowledge the newest entries
        become the quorum set."""
        if message.reject or message.frm not in self._voters or message.index < self._round_index:
            return
        if message.frm in self._round_acks:
            return
        self._round_acks.append(message.frm)
        need = len(self._voters) // 2
        if len(self._round_acks) == need:
            self.quorum_set = frozenset(self._round_acks)

    def reset(self) -> None:
        """Leadership or membership changed: send what is held and pick the quorum set anew."""
        for peer in list(self._held):
            self._flush(peer)
        self.quorum_set = frozenset()
        self._round_index = 0
        self._round_acks = []

    def close(self) -> None:
        """The store stops: drop what is held (unacknowledged appends, resent by any leader)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._held.clear()

    def _new_round(self, batch: Sequence[Message]) -> None:
        newest = max((m.entries[-1].index for m in batch if m.type == MsgType.APP and m.entries), default=0)
        if newest > self._round_index:
            self._round_index = newest
            self._round_acks = []

    def _hold(self, peer: int, batch: list[Message]) -> None:
        held = self._held.get(peer)
        if held is None:
            self._held[peer] = list(batch)
            self._timers[peer] = asyncio.get_running_loop().call_later(self.delay, self._flush, peer)
        else:
            held.extend(batch)

    def _take_held(self, peer: int) -> list[Message]:
        timer = self._timers.pop(peer, None)
        if timer is not None:
            timer.cancel()
        return self._held.pop(peer, [])

    def _flush(self, peer: int) -> None:
        held = self._take_held(peer)
        if held:
            self._send(peer, held)
