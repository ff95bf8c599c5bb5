"""Snapshots taken without holding the loop: encoded in slices, written off the loop, and the
WAL compacted only once the file is durable; one at a time; the state exactly at its index."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from shoal.roles import StoreUnavailable
from shoal.testing.store import RecordingMachine
from shoal_store_raft import RaftStore, snapfile
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.provider import MEMBER_FILE, format_id
from shoal_store_raft.raft import (
    ConfChangeType,
    Entry,
    HardState,
    Message,
    MsgType,
    Snapshot,
    SnapshotChunk,
    SnapshotMeta,
)
from shoal_store_raft.wal import WAL, list_segments

T = TypeVar("T")
DEADLINE = 30.0


class SlowSnapshots(RecordingMachine):
    """A state machine whose snapshot costs ``pieces`` x ``cost`` seconds of CPU,
    whole (``snapshot``) or a piece at a time (``snapshot_slices``), like a large store."""

    def __init__(self, pieces: int, cost: float) -> None:
        super().__init__()
        self.pieces = pieces
        self.cost = cost

    def snapshot(self) -> bytes:
        return b"".join(self.snapshot_slices())

    def snapshot_slices(self) -> Iterator[bytes]:
        data = super().snapshot()  # the state now: later applies must not leak in

        def pieces() -> Iterator[bytes]:
            yield data
            for _ in range(self.pieces):
                until = time.thread_time() + self.cost
                while time.thread_time() < until:
                    pass
                yield b""

        return pieces()


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


def snapshot_index(store: RaftStore) -> int:
    index = store.status()["snapshot_index"]
    assert isinstance(index, int)
    return index


async def test_a_slow_snapshot_never_holds_the_loop_long(tmp_path: Path) -> None:
    # 300 ms of encoding: taken in one go, a timer waits all of it.
    machine = SlowSnapshots(pieces=60, cost=0.005)
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5))
    await store.start(machine, bootstrap=True)
    worst = 0.0
    done = False

    async def probe() -> None:
        # The loop thread's CPU time between a timer's start and its firing: what held the
        # loop meanwhile, free of how busy the machine is (wall-clock lateness is not).
        nonlocal worst
        while not done:
            asked = time.thread_time()
            await asyncio.sleep(0.002)
            worst = max(worst, time.thread_time() - asked)

    prober = asyncio.create_task(probe())
    for n in range(5):
        await store.propose(b"e%d" % n)
    await until(lambda: snapshot_index(store) >= 5)
    done = True
    await prober
    await store.stop()
    assert worst < 0.15, f"the loop was held {worst * 1000:.0f} ms by a 300 ms snapshot"


async def test_the_wal_is_compacted_only_once_the_snapshot_is_durable_and_one_at_a_time(
    tmp_path: Path,
) -> None:
    gate = Gate()
    machine = RecordingMachine()
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5, segment_bytes=256), blocking=gate)
    await store.start(machine, bootstrap=True)
    acked = {}
    for n in range(5):
        acked[await store.propose(b"a%02d" % n * 4)] = b"a%02d" % n * 4
    await until(lambda: gate.calls == 1)
    applied = store.status()["applied_index"]
    assert isinstance(applied, int)
    segments = list_segments(tmp_path / "wal")
    for n in range(12):  # more than another interval while the first is being written
        acked[await store.propose(b"b%02d" % n * 4)] = b"b%02d" % n * 4
    assert gate.calls == 1, "a second snapshot started while one was in flight"
    assert snapshot_index(store) == 0 and store.status()["first_index"] == 1
    assert list_segments(tmp_path / "wal")[: len(segments)] == segments, "WAL released before the file"
    assert snapfile.list_snapshots(tmp_path / "snap") == []
    gate.open.set()
    await until(lambda: snapshot_index(store) > 0)
    taken_at = snapshot_index(store)
    assert 5 <= taken_at <= applied, "not the state where the interval was reached"
    assert store.status()["first_index"] == taken_at + 1
    snap = snapfile.load_latest(tmp_path / "snap")
    assert snap is not None and snap.meta.index == taken_at
    restored = RecordingMachine()
    restored.restore(snap.meta.index, snap.data)
    assert restored.state == {i: e for i, e in acked.items() if i <= taken_at}, "later writes leaked in"
    await store.stop()


async def test_stop_finishes_the_snapshot_under_way(tmp_path: Path) -> None:
    gate = Gate()
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5), blocking=gate)
    await store.start(RecordingMachine(), bootstrap=True)
    acked = {}
    for n in range(5):
        acked[await store.propose(b"s%d" % n)] = b"s%d" % n
    await until(lambda: gate.calls == 1)
    stopping = asyncio.create_task(store.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop did not wait for the snapshot being written"
    gate.open.set()
    await asyncio.wait_for(stopping, DEADLINE)
    machine = RecordingMachine()
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5))
    await store.start(machine, bootstrap=False)
    assert machine.restored_at is not None and machine.restored_at >= 5
    assert all(machine.state[i] == e for i, e in acked.items())
    await store.stop()


async def test_a_failed_snapshot_write_stops_the_store(tmp_path: Path) -> None:
    async def full_disk(fn: Callable[[], T]) -> T:
        raise OSError(28, "No space left on device")

    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=3), blocking=full_disk)
    await store.start(RecordingMachine(), bootstrap=True)
    for n in range(2):  # with the leader's empty entry, 3 applied: the snapshot starts
        await store.propose(b"f%d" % n)
    await until(lambda: store.status()["state"] == "failed")
    with pytest.raises(StoreUnavailable, match="No space left on device"):
        await store.propose(b"after")
    await store.stop()


@pytest.mark.parametrize("write_fails", [False, True])
async def test_a_snapshot_overtaken_by_an_installed_one_is_dropped(tmp_path: Path, write_fails: bool) -> None:
    # A follower installs its leader's newer snapshot while its own is being written: the
    # install's pruning may take the file being written; neither outcome may stop the store
    # or leave the older file behind.
    gate = Gate()

    async def overtaken(fn: Callable[[], T]) -> T:
        gate.calls += 1
        await gate.open.wait()
        if write_fails:
            raise FileNotFoundError(2, "No such file or directory", ".tmp-0000.snap")
        return fn()

    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5), blocking=overtaken)
    await store.start(RecordingMachine(), bootstrap=True)
    for n in range(5):
        await store.propose(b"o%d" % n)
    await until(lambda: gate.calls == 1)
    leader = RecordingMachine()
    leader.apply(100, b"the leader's")
    store._install_snapshot(Snapshot(SnapshotMeta(100, 1, (store.member_id,)), leader.snapshot()))
    gate.open.set()
    await until(lambda: store._snapshotting is None)
    assert store.status()["state"] == "running" and snapshot_index(store) == 100
    assert [p.name[:16] for p in snapfile.list_snapshots(tmp_path / "snap")] == [f"{100:016x}"]
    await store.stop()


class SlowRestore(RecordingMachine):
    """Restoring costs ``steps`` x ``cost`` seconds of CPU, whole or a step at a time."""

    def __init__(self, steps: int, cost: float) -> None:
        super().__init__()
        self.steps = steps
        self.cost = cost

    def restore(self, index: int, data: bytes) -> None:
        for _ in self.restore_steps(index, data):
            pass

    def restore_steps(self, index: int, data: bytes) -> Iterator[None]:
        for _ in range(self.steps):
            until = time.thread_time() + self.cost
            while time.thread_time() < until:
                pass
            yield
        super().restore(index, data)


async def test_a_follower_installs_a_leader_snapshot_without_holding_the_loop_and_acks_it_last(
    tmp_path: Path,
) -> None:
    me, leader = 0x1234, 0x2
    WAL.create(tmp_path / "wal", SnapshotMeta(0, 0, (me, leader, 0x3)), HardState()).close()
    (tmp_path / MEMBER_FILE).write_text(json.dumps({"raft_id": format_id(me)}))
    machine = SlowRestore(steps=60, cost=0.005)  # 300 ms of restoring
    acks: list[tuple[bool, int | None]] = []

    def send(messages: Sequence[Message]) -> None:
        for m in messages:
            if m.type == MsgType.APP_RESP and m.index == 50:  # what the ack says: durable and loaded
                on_disk = snapfile.load_latest(tmp_path / "snap")
                acks.append((on_disk is not None and on_disk.meta.index == 50, machine.restored_at))

    store = RaftStore(tmp_path, RaftOptions(tick_ms=60_000), send=send)
    await store.start(machine, bootstrap=False)
    theirs = RecordingMachine()
    theirs.apply(50, b"the leader's state")
    data = theirs.snapshot()
    meta = SnapshotMeta(50, 1, (me, leader, 0x3))
    worst, done = 0.0, False

    async def probe() -> None:
        nonlocal worst
        while not done:
            asked = time.thread_time()
            await asyncio.sleep(0.002)
            worst = max(worst, time.thread_time() - asked)

    prober = asyncio.create_task(probe())
    store.step(Message(MsgType.SNAP, me, leader, 1, snapshot=SnapshotChunk(meta, 0, data, len(data))))
    await until(lambda: bool(acks))
    done = True
    await prober
    assert acks == [(True, 50)], "acknowledged before the snapshot was durable and loaded"
    assert machine.state == {50: b"the leader's state"} and store.status()["applied_index"] == 50
    assert worst < 0.15, f"the loop was held {worst * 1000:.0f} ms by a 300 ms restore"
    await store.stop()


async def test_a_snapshot_keeps_the_learners_across_a_restart(tmp_path: Path) -> None:
    # A manager joining is a learner while it catches up, which is when snapshots are sent.
    learner = 0x99
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5))
    await store.start(RecordingMachine(), bootstrap=True)
    await store._conf_change(ConfChangeType.ADD_LEARNER, learner)
    for n in range(5):
        await store.propose(b"l%d" % n)
    await until(lambda: snapshot_index(store) > 0)
    await store.stop()
    snap = snapfile.load_latest(tmp_path / "snap")
    assert snap is not None and snap.meta.learners == (learner,)
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5))
    await store.start(RecordingMachine(), bootstrap=False)
    assert store.status()["learners"] == [format_id(learner)]
    await store.stop()


async def test_force_new_cluster_is_not_overwritten_by_a_snapshot_its_replay_started(tmp_path: Path) -> None:
    # The replay of a three-member WAL reaches the snapshot interval at the commit index: the
    # snapshot it starts has the forced one's name but the old membership.
    me = 0x1234
    wal = WAL.create(tmp_path / "wal", SnapshotMeta(0, 0, (me, 0x2, 0x3)), HardState())
    wal.save([Entry(i, 1, b"f%d" % i) for i in range(1, 6)], HardState(1, me, 5), True)
    wal.close()
    (tmp_path / MEMBER_FILE).write_text(json.dumps({"raft_id": format_id(me)}))
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5))
    await store.start(RecordingMachine(), bootstrap=False, force_new_cluster=True)
    await until(lambda: store._snapshotting is None)
    await store.stop()
    snap = snapfile.load_latest(tmp_path / "snap")
    assert snap is not None and snap.meta.voters == (me,), "the old membership came back"
    machine = RecordingMachine()
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5))
    await store.start(machine, bootstrap=False)
    assert store.is_leader() and all(machine.state[i] == b"f%d" % i for i in range(1, 6))
    await store.stop()
