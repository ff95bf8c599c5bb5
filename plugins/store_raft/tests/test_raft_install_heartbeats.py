"""A follower installing a leader's snapshot keeps answering the leader's heartbeats.

At 100,000 tasks an install takes 0.3-1.3 s (the file written, the state machine restored in
steps), longer than an election timeout: a follower that answered nothing meanwhile was
counted inactive by the leader's CheckQuorum (two such followers of three managers made the
leader step down) and confirmed no read. Its acknowledgement of the snapshot still leaves only
once the snapshot is durable and loaded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from shoal.testing.store import RecordingMachine
from shoal_store_raft import RaftStore, snapfile
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.provider import MEMBER_FILE, format_id
from shoal_store_raft.raft import (
    HardState,
    Message,
    MsgType,
    RaftCore,
    SnapshotChunk,
    SnapshotMeta,
)
from shoal_store_raft.raft.progress import ProgressState
from shoal_store_raft.raft.testnet import Network
from shoal_store_raft.wal import WAL

T = TypeVar("T")
DEADLINE = 30.0


class Gate:
    """A ``blocking`` runner that holds every snapshot write until the test opens it."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.calls = 0

    async def __call__(self, fn: Callable[[], T]) -> T:
        self.calls += 1
        await self.open.wait()
        return fn()


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_a_follower_answers_heartbeats_while_it_installs_and_acks_the_snapshot_last(
    tmp_path: Path,
) -> None:
    me, leader = 0x1234, 0x2
    WAL.create(tmp_path / "wal", SnapshotMeta(0, 0, (me, leader, 0x3)), HardState(1, 0, 0)).close()
    (tmp_path / MEMBER_FILE).write_text(json.dumps({"raft_id": format_id(me)}))
    sent: list[Message] = []

    def send(messages: Sequence[Message]) -> None:
        sent.extend(messages)

    gate = Gate()
    store = RaftStore(tmp_path, RaftOptions(tick_ms=60_000), send=send, blocking=gate)
    machine = RecordingMachine()
    await store.start(machine, bootstrap=False)
    theirs = RecordingMachine()
    theirs.apply(50, b"the leader's state")
    data = theirs.snapshot()
    meta = SnapshotMeta(50, 1, (me, leader, 0x3))
    store.step(Message(MsgType.SNAP, me, leader, 1, snapshot=SnapshotChunk(meta, 0, data, len(data))))
    await until(lambda: gate.calls == 1)  # the install is under way: its file write is held
    store.step(Message(MsgType.HEARTBEAT, me, leader, 1, commit=50, index=50, context=b"read-1"))
    await until(lambda: any(m.type == MsgType.HEARTBEAT_RESP for m in sent))
    answers = [m for m in sent if m.type == MsgType.HEARTBEAT_RESP]
    assert [(m.to, m.term, m.context, m.commit) for m in answers] == [(leader, 1, b"read-1", 50)]
    assert not any(m.type == MsgType.APP_RESP for m in sent), "acknowledged before the snapshot was durable"
    gate.open.set()
    await until(lambda: any(m.type == MsgType.APP_RESP and m.index == 50 for m in sent))
    on_disk = snapfile.load_latest(tmp_path / "snap")
    assert on_disk is not None and on_disk.meta.index == 50 and machine.state == {50: b"the leader's state"}
    await store.stop()


async def test_a_heartbeat_that_came_with_the_last_chunk_is_answered_before_the_install_ends(
    tmp_path: Path,
) -> None:
    # Stepped in the same loop turn as the snapshot's last chunk (one batch from the network):
    # its answer is in the Ready that brings the snapshot, and leaves without waiting for it.
    me, leader = 0x1234, 0x2
    WAL.create(tmp_path / "wal", SnapshotMeta(0, 0, (me, leader, 0x3)), HardState(1, 0, 0)).close()
    (tmp_path / MEMBER_FILE).write_text(json.dumps({"raft_id": format_id(me)}))
    sent: list[Message] = []
    gate = Gate()
    store = RaftStore(tmp_path, RaftOptions(tick_ms=60_000), send=sent.extend, blocking=gate)
    await store.start(RecordingMachine(), bootstrap=False)
    theirs = RecordingMachine()
    theirs.apply(50, b"state")
    data = theirs.snapshot()
    meta = SnapshotMeta(50, 1, (me, leader, 0x3))
    store.step(Message(MsgType.SNAP, me, leader, 1, snapshot=SnapshotChunk(meta, 0, data, len(data))))
    store.step(Message(MsgType.HEARTBEAT, me, leader, 1, commit=50, index=50, context=b"with-it"))
    await until(lambda: gate.calls == 1)
    await until(lambda: any(m.type == MsgType.HEARTBEAT_RESP for m in sent))
    assert [m.type for m in sent] == [MsgType.HEARTBEAT_RESP] and sent[0].context == b"with-it"
    gate.open.set()
    await until(lambda: any(m.type == MsgType.APP_RESP and m.index == 50 for m in sent))
    assert [m.type for m in sent].count(MsgType.HEARTBEAT_RESP) == 1
    await store.stop()


async def test_heartbeats_at_a_term_not_yet_durable_wait_for_the_install(tmp_path: Path) -> None:
    # The snapshot comes from the leader of a newer term: that term is written with the
    # install's Ready, so nothing at that term leaves before it.
    me, leader = 0x1234, 0x2
    WAL.create(tmp_path / "wal", SnapshotMeta(0, 0, (me, leader, 0x3)), HardState(1, 0, 0)).close()
    (tmp_path / MEMBER_FILE).write_text(json.dumps({"raft_id": format_id(me)}))
    sent: list[Message] = []
    gate = Gate()
    store = RaftStore(tmp_path, RaftOptions(tick_ms=60_000), send=sent.extend, blocking=gate)
    await store.start(RecordingMachine(), bootstrap=False)
    theirs = RecordingMachine()
    theirs.apply(50, b"state")
    data = theirs.snapshot()
    meta = SnapshotMeta(50, 2, (me, leader, 0x3))
    store.step(Message(MsgType.SNAP, me, leader, 2, snapshot=SnapshotChunk(meta, 0, data, len(data))))
    await until(lambda: gate.calls == 1)
    store.step(Message(MsgType.HEARTBEAT, me, leader, 2, commit=50, index=50))
    for _ in range(20):
        await asyncio.sleep(0)
    assert sent == []
    gate.open.set()
    await until(lambda: any(m.type == MsgType.HEARTBEAT_RESP for m in sent))
    kinds = [m.type for m in sent]
    assert kinds.index(MsgType.APP_RESP) < kinds.index(MsgType.HEARTBEAT_RESP)
    await store.stop()


def installing_follower() -> tuple[Network, RaftCore, RaftCore, SnapshotMeta]:
    """A leader streaming its snapshot to node 3, which received it whole and is installing
    it (its Ready taken, not advanced)."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for n in range(20):
        net.nodes[1].propose(b"value-%d" % n)
    net.stabilize()
    net.compact(1)
    net.heal()
    leader, follower = net.nodes[1], net.nodes[3]
    leader.report_unreachable(3)
    leader.step(Message(MsgType.HEARTBEAT_RESP, 1, 3, leader.term, index=0))
    chunks = [m for m in leader.ready().messages if m.to == 3]
    assert [m.type for m in chunks] == [MsgType.SNAP]
    follower.step(chunks[0])
    rd = follower.ready()
    assert rd.snapshot is not None
    return net, leader, follower, rd.snapshot.meta


def test_a_leader_sends_nothing_more_to_a_follower_that_says_it_is_installing() -> None:
    _, leader, follower, meta = installing_follower()
    follower.step(Message(MsgType.HEARTBEAT, 3, 1, leader.term, commit=leader.commit, index=meta.index))
    answers = follower.take_heartbeat_responses(follower.term)
    assert [(m.type, m.commit) for m in answers] == [(MsgType.HEARTBEAT_RESP, meta.index)]
    assert not any(m.type == MsgType.HEARTBEAT_RESP for m in follower.ready().messages)
    leader.step(answers[0])
    pr = leader.progress(3)
    assert pr is not None and pr.state == ProgressState.SNAPSHOT and pr.recent_active
    assert not [m for m in leader.ready().messages if m.to == 3], "the snapshot was sent again"


def test_a_leader_resends_the_snapshot_when_the_follower_is_not_installing_it() -> None:
    # The follower lost the snapshot (a restart): its heartbeat responses say nothing of it,
    # and the leader sends the chunks it has no acknowledgement for again.
    _, leader, _, meta = installing_follower()
    leader.step(Message(MsgType.HEARTBEAT_RESP, 1, 3, leader.term, index=0))
    again = [m for m in leader.ready().messages if m.to == 3]
    assert [m.type for m in again] == [MsgType.SNAP]
    assert again[0].snapshot is not None and again[0].snapshot.meta == meta
