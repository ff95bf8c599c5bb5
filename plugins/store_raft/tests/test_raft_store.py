"""The RaftStore provider on real files: group commit, tails, snapshots, errors, entry point."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from shoal.roles import PluginContext, StoreUnavailable
from shoal.testing.store import RecordingMachine
from shoal_store_raft import RaftStore, snapfile
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.provider import MEMBER_FILE, StoreStateError, format_id
from shoal_store_raft.raft import Entry, HardState, Message, SnapshotMeta
from shoal_store_raft.wal import WAL, WalCorruption, encode_entries, list_segments


async def started(state_dir: Path, machine: RecordingMachine, bootstrap: bool, **opts: int) -> RaftStore:
    store = RaftStore(state_dir, RaftOptions(**opts))
    await store.start(machine, bootstrap=bootstrap)
    return store


async def test_concurrent_proposals_share_fsyncs(tmp_path: Path) -> None:
    store = await started(tmp_path, RecordingMachine(), True)
    before = store.status()["wal_syncs"]
    assert isinstance(before, int)
    indexes = await asyncio.gather(*(store.propose(b"p%d" % n) for n in range(32)))
    syncs = store.status()["wal_syncs"]
    assert isinstance(syncs, int)
    assert len(set(indexes)) == 32
    assert syncs - before <= 2, f"32 concurrent proposals took {syncs - before} fsyncs"
    await store.stop()


async def test_submit_appends_at_once_and_its_future_resolves_once_applied(tmp_path: Path) -> None:
    """``submit`` is ``propose`` without the await: the entry is in the log when it returns (the
    kernel's group commit proposes a lone write in its own loop turn this way), and the future
    gives its index once the state machine applied it; a refusal is raised at once."""
    machine = RecordingMachine()
    store = await started(tmp_path, machine, True)
    assert store.status()["last_index"] == 1
    fut = store.submit(b"now")
    assert store.status()["last_index"] == 2 and not fut.done()
    assert await asyncio.wait_for(fut, 5) == 2
    assert machine.state[2] == b"now"
    await store.stop()
    with pytest.raises(StoreUnavailable, match="stopped"):
        store.submit(b"after stop")


async def test_a_leader_applies_a_commit_before_it_writes_the_commit_index(tmp_path: Path) -> None:
    """The leader applies a committed entry (answering its writer) and writes the new commit
    index to its WAL on the next loop turn, after the answer: that record is not synced and no
    promise rests on it. Before, the record was written first, on the answer's path. A
    restart still finds every acknowledged entry."""
    order: list[str] = []

    class Machine(RecordingMachine):
        def apply(self, index: int, entry: bytes) -> None:
            order.append(f"apply {index}")
            super().apply(index, entry)

    store = await started(tmp_path, Machine(), True)
    wal = store._wal
    assert wal is not None
    save = wal.save

    def recording_save(entries: Sequence[Entry], hard_state: HardState | None, sync: bool) -> None:
        if entries:
            order.append(f"entries {entries[-1].index}")
        if hard_state is not None:
            order.append(f"commit {hard_state.commit}")
        save(entries, hard_state, sync)

    wal.save = recording_save  # type: ignore[method-assign]
    index = await asyncio.wait_for(store.propose(b"first"), 5)
    assert order.index(f"apply {index}") < order.index(f"commit {index}"), order
    await store.stop()
    machine = RecordingMachine()
    reopened = await started(tmp_path, machine, False)
    assert machine.state[index] == b"first"
    await reopened.stop()


async def test_single_member_leads_immediately_and_status_reports_it(tmp_path: Path) -> None:
    store = await started(tmp_path, RecordingMachine(), True, tick_ms=60_000)  # no tick will ever fire
    status = store.status()
    assert store.is_leader() and status["role"] == "leader"
    assert status["leader"] == status["raft_id"] and status["members"] == [status["raft_id"]]
    assert status["term"] == 1 and status["commit_index"] == status["applied_index"] == 1
    member = json.loads((tmp_path / MEMBER_FILE).read_text())
    assert member["raft_id"] == status["raft_id"]
    events = store.leadership()
    assert await anext(events) is True
    await store.stop()
    # After stop, the iterator reports the loss of leadership and ends.
    assert [e async for e in events] == [False]


async def test_reopen_replays_and_keeps_raft_id(tmp_path: Path) -> None:
    store = await started(tmp_path, RecordingMachine(), True)
    raft_id = store.status()["raft_id"]
    acked = {await store.propose(b"e%d" % n): b"e%d" % n for n in range(10)}
    await store.stop()
    machine = RecordingMachine()
    store = await started(tmp_path, machine, False)
    assert store.status()["raft_id"] == raft_id and store.status()["term"] == 2
    assert all(machine.state[i] == e for i, e in acked.items())
    await store.stop()


async def test_reopen_without_state_and_bootstrap_over_state_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(StoreStateError, match=r"no raft state in .*never initialised"):
        await started(tmp_path / "empty", RecordingMachine(), False)
    store = await started(tmp_path / "used", RecordingMachine(), True)
    await store.stop()
    with pytest.raises(StoreStateError, match="already exists"):
        await started(tmp_path / "used", RecordingMachine(), True)


async def test_torn_unacknowledged_tail_is_dropped_and_the_store_reopens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await started(tmp_path, RecordingMachine(), True)
    acked = {await store.propose(b"ok%d" % n): b"ok%d" % n for n in range(5)}
    await store.stop()
    # Simulate a crash in the middle of writing the next entry: half a record at the end.
    (segment,) = list_segments(tmp_path / "wal")
    parts: list[bytes] = []
    encode_entries([Entry(max(acked) + 1, 2, b"never-acknowledged" * 10)], parts)
    record = b"".join(parts)
    segment.write_bytes(segment.read_bytes() + record[: len(record) // 2])
    machine = RecordingMachine()
    with caplog.at_level(logging.WARNING, logger="shoal.store.raft"):
        store = await started(tmp_path, machine, False)
    assert any("torn last record" in r.getMessage() for r in caplog.records)
    assert all(machine.state[i] == e for i, e in acked.items())
    assert b"never-acknowledged" * 10 not in machine.state.values()
    assert await store.propose(b"after") > max(acked)
    await store.stop()


async def test_corruption_before_the_tail_refuses_to_open(tmp_path: Path) -> None:
    store = await started(tmp_path, RecordingMachine(), True)
    for n in range(20):
        await store.propose(b"x%d" % n * 20)
    await store.stop()
    (segment,) = list_segments(tmp_path / "wal")
    data = bytearray(segment.read_bytes())
    data[len(data) // 3] ^= 0x55
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorruption, match=rf"{segment.name} is corrupt at offset \d+") as info:
        await started(tmp_path, RecordingMachine(), False)
    # One line an operator can act on: what is wrong, where, and the three ways out.
    message = str(info.value)
    assert "\n" not in message
    for remedy in (f"restore {tmp_path} from a backup", "join it again", "--force-new-cluster"):
        assert remedy in message
    assert segment.read_bytes() == bytes(data)


async def test_a_corrupt_newest_snapshot_refuses_to_open_with_the_remedy(tmp_path: Path) -> None:
    store = await started(tmp_path, RecordingMachine(), True, snapshot_interval=20)
    for n in range(30):
        await store.propose(b"s%d" % n)
    await store.stop()
    newest = snapfile.list_snapshots(tmp_path / "snap")[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x08
    newest.write_bytes(bytes(data))
    with pytest.raises(
        snapfile.SnapshotCorrupt, match=rf"{newest.name} fails its CRC check; .*--force-new-cluster"
    ):
        await started(tmp_path, RecordingMachine(), False)


async def test_snapshots_compact_the_wal_and_restart_restores_from_them(tmp_path: Path) -> None:
    store = await started(tmp_path, RecordingMachine(), True, snapshot_interval=50, segment_bytes=2048)
    first_segment = list_segments(tmp_path / "wal")[0]
    acked = {}
    for n in range(400):
        acked[await store.propose(b"v%03d" % n * 8)] = b"v%03d" % n * 8
    status = store.status()
    assert isinstance(status["snapshot_index"], int) and status["snapshot_index"] >= 350
    assert status["first_index"] == status["snapshot_index"] + 1  # in-memory log compacted too
    await store.stop()
    snaps = snapfile.list_snapshots(tmp_path / "snap")
    assert len(snaps) == 1, "older snapshots are pruned"
    assert not first_segment.exists(), "segments wholly before the snapshot are deleted"
    segments = list_segments(tmp_path / "wal")
    assert 1 <= len(segments) <= 4
    assert not [p for p in (tmp_path / "snap").iterdir() if p.name.startswith(".tmp")]
    machine = RecordingMachine()
    store = await started(tmp_path, machine, False, snapshot_interval=50, segment_bytes=2048)
    assert machine.restored_at == snapfile.load_latest(tmp_path / "snap").meta.index  # type: ignore[union-attr]
    assert all(i > machine.restored_at for i in machine.calls)
    assert all(machine.state[i] == e for i, e in acked.items())
    await store.stop()


async def test_missing_snapshot_file_is_a_clear_error(tmp_path: Path) -> None:
    store = await started(tmp_path, RecordingMachine(), True, snapshot_interval=5)
    for n in range(12):
        await store.propose(b"%d" % n)
    await store.stop()
    for path in snapfile.list_snapshots(tmp_path / "snap"):
        os.unlink(path)
    with pytest.raises(StoreStateError, match="no such snapshot file"):
        await started(tmp_path, RecordingMachine(), False)


async def test_a_member_of_a_larger_group_is_not_leader_alone(tmp_path: Path) -> None:
    raft_id = 0x1234
    WAL.create(tmp_path / "wal", SnapshotMeta(0, 0, (raft_id, 0x2, 0x3)), HardState()).close()
    (tmp_path / MEMBER_FILE).write_text(json.dumps({"raft_id": format_id(raft_id)}))
    sent: list[Message] = []
    got_messages = asyncio.Event()

    def send(messages: Sequence[Message]) -> None:
        sent.extend(messages)
        got_messages.set()

    store = RaftStore(tmp_path, RaftOptions(tick_ms=5), send=send)
    await store.start(RecordingMachine(), bootstrap=False)
    assert not store.is_leader()
    with pytest.raises(StoreUnavailable, match="this node is not the leader"):
        await store.propose(b"x")
    # Its election timer fires and it asks the peers through the send hook.
    await asyncio.wait_for(got_messages.wait(), 10)
    assert {m.to for m in sent} >= {0x2, 0x3}
    await store.stop()


async def test_failed_apply_stops_the_store_and_fails_the_proposal(tmp_path: Path) -> None:
    class Exploding(RecordingMachine):
        def apply(self, index: int, entry: bytes) -> None:
            if entry == b"boom":
                raise RuntimeError("machine refused entry")
            super().apply(index, entry)

    store = await started(tmp_path, Exploding(), True)
    await store.propose(b"fine")
    with pytest.raises(StoreUnavailable, match="machine refused entry"):
        await store.propose(b"boom")
    with pytest.raises(StoreUnavailable, match="fatal error"):
        await store.propose(b"later")
    assert store.status()["state"] == "failed"
    await store.stop()


def test_options_are_parsed_and_bad_ones_named(tmp_path: Path) -> None:
    ctx = PluginContext("store", "raft", tmp_path, {"snapshot-interval": "5", "tick-ms": "20"})
    store = RaftStore.from_context(ctx)
    assert store.options.snapshot_interval == 5 and store.options.tick_ms == 20
    with pytest.raises(ValueError, match="snapshot-interval must be a positive integer, got 'lots'"):
        RaftOptions.parse({"snapshot-interval": "lots"})
    with pytest.raises(ValueError, match="tick-ms must be a positive integer"):
        RaftOptions.parse({"tick-ms": "0"})
    with pytest.raises(ValueError, match="unknown store option 'snapshot_every'"):
        RaftOptions.parse({"snapshot_every": "3"})


def test_entry_point_builds_the_provider(tmp_path: Path) -> None:
    (ep,) = [e for e in entry_points(group="shoal.store") if e.name == "raft"]
    assert ep.dist is not None and ep.dist.name == "shoal-store-raft"
    module = ep.load()
    store = module.shoal_store_provider(PluginContext("store", "raft", tmp_path, {"snapshot-interval": "3"}))
    assert isinstance(store, RaftStore) and store.options.snapshot_interval == 3
    assert RaftStore.role == "store" and RaftStore.api_version == 3
