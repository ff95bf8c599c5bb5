"""Snapshots by WAL bytes: a log of big entries is compacted long before ``snapshot_interval``
entries (at 100,000 tasks, 10,000 entries of up to 1,000 changes each let the WAL reach
1.3 GB before the first snapshot)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from shoal.testing.store import RecordingMachine
from shoal_store_raft import RaftStore
from shoal_store_raft.options import DEFAULT_SNAPSHOT_WAL_BYTES, RaftOptions
from shoal_store_raft.wal import list_segments

DEADLINE = 30.0


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def wal_bytes(state_dir: Path) -> int:
    return sum(path.stat().st_size for path in list_segments(state_dir / "wal"))


async def test_the_wal_on_disk_stays_bounded_under_big_entries(tmp_path: Path) -> None:
    # 400 entries of 4 KiB (1.6 MB), far below the entry interval: only the bytes trigger
    # snapshots, and each one releases the segments before it.
    limit, segment = 64 << 10, 16 << 10
    opts = RaftOptions(snapshot_interval=10_000, snapshot_wal_bytes=limit, segment_bytes=segment)
    store = RaftStore(tmp_path, opts)
    await store.start(RecordingMachine(), bootstrap=True)
    worst = 0
    for n in range(400):
        await store.propose(b"%04d" % n * 1024)
        worst = max(worst, wal_bytes(tmp_path))
    await until(lambda: store._snapshotting is None)
    snapshot_index = store.status()["snapshot_index"]
    await store.stop()
    # What was written since the last snapshot, the segment that holds it, the one being
    # written, and what came while the last snapshot was being saved.
    assert worst <= 2 * limit + 3 * segment, f"the WAL reached {worst} bytes on disk"
    assert isinstance(snapshot_index, int) and snapshot_index > 0


async def test_small_entries_still_snapshot_by_count(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=5))
    await store.start(RecordingMachine(), bootstrap=True)
    for n in range(5):
        await store.propose(b"s%d" % n)
    await until(lambda: store.status()["snapshot_index"] != 0)
    await store.stop()


async def test_a_restart_on_a_big_wal_snapshots_it(tmp_path: Path) -> None:
    # A WAL that grew before this trigger existed (or before a crash) counts at open.
    opts = RaftOptions(snapshot_interval=10_000, snapshot_wal_bytes=1 << 30, segment_bytes=16 << 10)
    store = RaftStore(tmp_path, opts)
    await store.start(RecordingMachine(), bootstrap=True)
    for n in range(100):
        await store.propose(b"%04d" % n * 1024)
    await store.stop()
    assert store.status()["snapshot_index"] == 0
    before = wal_bytes(tmp_path)
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=10_000, snapshot_wal_bytes=64 << 10))
    await store.start(RecordingMachine(), bootstrap=False)
    await store.propose(b"after the restart")
    await until(lambda: store.status()["snapshot_index"] != 0 and store._snapshotting is None)
    await store.stop()
    assert wal_bytes(tmp_path) < before


def test_the_option_parses_and_defaults_to_64_mib() -> None:
    assert RaftOptions.parse({}).snapshot_wal_bytes == DEFAULT_SNAPSHOT_WAL_BYTES == 64 << 20
    assert RaftOptions.parse({"snapshot-wal-bytes": "1048576"}).snapshot_wal_bytes == 1 << 20
    with pytest.raises(ValueError, match="snapshot-wal-bytes must be a positive integer"):
        RaftOptions.parse({"snapshot-wal-bytes": "0"})
