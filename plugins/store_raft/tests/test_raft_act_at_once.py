"""A write's messages are acted on in the callback that delivers them (issue 18 item 5).

A follower writes, fsyncs and acknowledges an append, and a leader commits and applies on an
acknowledgement, while the message is being handled (``RaftStore.step``), not a loop turn
later; a pull stream then lets a few loop turns pass (``peernet.EFFECT_TURNS``) so what that
set off (the acknowledgement leaving, the writers' answers) runs before gRPC arms its next read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from shoal.testing.store import RecordingMachine
from shoal_store_raft import RaftStore, peernet
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.peernet import PeerNetwork
from shoal_store_raft.peers import PeerBook
from shoal_store_raft.provider import MEMBER_FILE, format_id
from shoal_store_raft.raft import Entry, HardState, Message, MsgType, SnapshotMeta
from shoal_store_raft.wal import WAL

ME, PEER, OTHER = 0x1, 0x2, 0x3


async def turns_until(condition: Callable[[], bool], what: str, turns: int = 1000) -> None:
    """Let loop turns pass until ``condition`` holds (at most ``turns`` of them)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not within {turns} loop turns: {what}")


async def member_of_three(state_dir: Path, sent: list[Message]) -> tuple[RaftStore, RecordingMachine]:
    """A started member of the group (ME, PEER, OTHER) that never campaigns on its own."""
    WAL.create(state_dir / "wal", SnapshotMeta(0, 0, (ME, PEER, OTHER)), HardState()).close()
    (state_dir / MEMBER_FILE).write_text(json.dumps({"raft_id": format_id(ME)}))

    def send(messages: Sequence[Message]) -> None:
        sent.extend(messages)

    store = RaftStore(state_dir, RaftOptions(tick_ms=60_000), send=send)
    machine = RecordingMachine()
    await store.start(machine, bootstrap=False)
    return store, machine


async def test_a_follower_acknowledges_an_append_in_the_callback_that_delivered_it(tmp_path: Path) -> None:
    sent: list[Message] = []
    store, _ = await member_of_three(tmp_path, sent)
    syncs = store.status()["wal_syncs"]
    assert isinstance(syncs, int)
    append = Message(MsgType.APP, ME, PEER, 1, log_term=0, index=0, entries=(Entry(1, 1, b"a"),))
    store.step(append)
    # No loop turn has passed: the entry is already durable and its acknowledgement handed over.
    acks = [m for m in sent if m.type == MsgType.APP_RESP and m.to == PEER]
    assert [(a.index, a.reject) for a in acks] == [(1, False)]
    assert store.status()["wal_syncs"] == syncs + 1
    await store.stop()


async def test_a_leader_commits_and_applies_in_the_callback_that_delivered_the_acknowledgement(
    tmp_path: Path,
) -> None:
    sent: list[Message] = []
    store, machine = await member_of_three(tmp_path, sent)
    core = store._core
    assert core is not None
    core.config = dataclasses.replace(core.config, pre_vote=False)  # straight to the vote
    core.campaign()
    store._schedule()
    await turns_until(lambda: any(m.type == MsgType.VOTE for m in sent), "the vote requests sent")
    store.step(Message(MsgType.VOTE_RESP, ME, PEER, core.term))
    await turns_until(store.is_leader, "leadership")
    store.step(Message(MsgType.APP_RESP, ME, PEER, core.term, index=core.last_index()))
    write = asyncio.create_task(store.propose(b"x"))
    # The leader sends its append, then makes the entry durable on its own disk.
    await turns_until(
        lambda: (
            any(m.type == MsgType.APP and any(e.data == b"x" for e in m.entries) for m in sent)
            and store._deferred is None
            and not store._scheduled
        ),
        "the append sent and the leader's own write done",
    )
    index = core.last_index()
    assert index not in machine.state
    store.step(Message(MsgType.APP_RESP, ME, PEER, core.term, index=index))
    # No loop turn has passed: committed on that acknowledgement and applied.
    assert machine.state[index] == b"x" and core.commit == index
    assert await write == index
    await store.stop()


class _Replica:
    """A replica whose every received message sets off a chain of ``turns`` callbacks, one per
    loop turn (as a committed write's answer does), and notes whether it ended."""

    member_id = ME

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.chains_done = 0

    def receive(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()

        def link(left: int) -> None:
            if left:
                loop.call_soon(link, left - 1)
            else:
                self.chains_done += 1

        loop.call_soon(link, self.turns - 1)

    def report_unreachable(self, member_id: int) -> None:
        pass

    def is_member(self, member_id: int) -> bool:
        return True


class _Transport:
    """A pull stream of ``count`` messages that records, each time the next one is asked for,
    how many of the replica's chains had ended."""

    def __init__(self, replica: _Replica, count: int) -> None:
        self.replica = replica
        self.count = count
        self.done_when_asked: list[int] = []
        self.finished = asyncio.Event()

    async def stream(self, addr: str, method: str, request: bytes, **_: object) -> AsyncIterator[bytes]:
        from shoal_store_raft import wire
        from shoal_store_raft.codec import encode_messages

        for _n in range(self.count):
            self.done_when_asked.append(self.replica.chains_done)
            batch = encode_messages([Message(MsgType.HEARTBEAT, ME, PEER, 1)])
            yield wire.encode(wire.Envelope(from_member=PEER, to_member=ME, batches=[batch]))
        self.done_when_asked.append(self.replica.chains_done)
        self.finished.set()
        await asyncio.Event().wait()  # the stream stays open


async def test_a_pull_stream_lets_a_messages_effects_run_before_reading_the_next() -> None:
    replica = _Replica(turns=peernet.EFFECT_TURNS)
    transport = _Transport(replica, count=5)
    book = PeerBook(None)
    book.learn(PEER, "node-peer", "127.0.0.1:1")
    net = PeerNetwork(
        replica=replica,
        book=book,
        transport=transport,  # type: ignore[arg-type]
        tls=lambda: None,  # type: ignore[arg-type,return-value]
        node_id="node-me",
        advertise_addr="127.0.0.1:2",
        on_removed=lambda message: None,
    )
    net._peer(PEER)  # starts pulling from it
    await asyncio.wait_for(transport.finished.wait(), 10)
    # Before each read, every earlier message's chain (answers, acknowledgements) had ended.
    assert transport.done_when_asked == [0, 1, 2, 3, 4, 5]
    await net.close()
