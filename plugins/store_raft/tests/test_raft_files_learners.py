"""Membership (voters AND learners) survives restarts through the WAL and the snapshot files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from shoal_store_raft import snapfile
from shoal_store_raft.raft import Entry, HardState, Snapshot, SnapshotMeta
from shoal_store_raft.snapfile import SnapshotCorrupt
from shoal_store_raft.wal import SNAPMARK, T_SNAPSHOT, WAL, WalCorruption, list_segments
from shoal_store_raft.walformat import record

BOOT = SnapshotMeta(0, 0, (1, 2, 3), (9,))


def entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, b"x%d" % i * 20) for i in range(lo, hi + 1)]


def test_bootstrap_learners_survive_a_wal_reopen(tmp_path: Path) -> None:
    WAL.create(tmp_path / "wal", BOOT, HardState(1, 1, 0)).close()
    wal, state = WAL.open(tmp_path / "wal")
    wal.close()
    assert state.snapshot == BOOT and state.snapshot.learners == (9,)


@pytest.mark.parametrize("learners", [(), (0xABCDEF0123456789,), (7, 8, 2**64 - 1)])
def test_snapshot_marker_membership_survives_reopen(tmp_path: Path, learners: tuple[int, ...]) -> None:
    wal = WAL.create(tmp_path / "wal", BOOT, HardState())
    wal.save(entries(1, 20), HardState(1, 1, 20), sync=True)
    meta = SnapshotMeta(15, 1, (1, 2, 3, 4), learners)
    wal.save_snapshot(meta)
    wal.close()
    wal, state = WAL.open(tmp_path / "wal")
    wal.close()
    assert state.snapshot == meta
    assert [e.index for e in state.entries] == list(range(16, 21))


def test_learners_survive_segment_rolls_and_compaction(tmp_path: Path) -> None:
    """Once old segments are deleted, only the marker each new segment opens with holds them."""
    wal = WAL.create(tmp_path / "wal", BOOT, HardState(), segment_bytes=512)
    meta = SnapshotMeta(10, 1, (1, 2), (3, 4))
    wal.save(entries(1, 10), HardState(1, 1, 10), sync=True)
    wal.save_snapshot(meta)
    for lo in range(11, 60, 5):
        wal.save(entries(lo, lo + 4), HardState(1, 1, lo + 4), sync=True)
    assert len(list_segments(tmp_path / "wal")) > 3
    assert wal.release_to(40)
    # The segment the marker was written into explicitly is gone: only rolled headers remain.
    assert min(int(p.name.split("-")[1][:16], 16) for p in list_segments(tmp_path / "wal")) > 11
    wal.close()
    wal, state = WAL.open(tmp_path / "wal")
    wal.close()
    assert state.snapshot == meta
    assert state.entries[0].index <= 41 and state.entries[-1].index == 60


def test_a_later_marker_replaces_the_membership(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path / "wal", BOOT, HardState())
    wal.save(entries(1, 30), HardState(1, 1, 30), sync=True)
    wal.save_snapshot(SnapshotMeta(10, 1, (1, 2, 3), (4,)))
    wal.save_snapshot(SnapshotMeta(20, 1, (1, 2, 3, 4), ()))  # learner 4 was promoted
    wal.close()
    wal, state = WAL.open(tmp_path / "wal")
    wal.close()
    assert state.snapshot == SnapshotMeta(20, 1, (1, 2, 3, 4), ())


def test_a_marker_whose_counts_disagree_with_its_length_is_corruption(tmp_path: Path) -> None:
    WAL.create(tmp_path / "wal", BOOT, HardState()).close()
    (segment,) = list_segments(tmp_path / "wal")
    payload = SNAPMARK.pack(T_SNAPSHOT, 5, 1, 3, 1) + struct.pack("<Q", 1)  # claims 4 IDs, holds 1
    with open(segment, "ab") as fh:
        fh.write(record(payload))
    with pytest.raises(WalCorruption, match="does not hold 3 voters and 1 learners"):
        WAL.open(tmp_path / "wal")


# ------------------------------------------------------------------ snapshot files


@pytest.mark.parametrize(
    "meta",
    [
        SnapshotMeta(42, 3, (1, 2, 3), (4, 5)),
        SnapshotMeta(42, 3, (1,), ()),
        SnapshotMeta(7, 1, (), (2**64 - 1,)),
    ],
)
def test_snapshot_file_round_trips_voters_and_learners(tmp_path: Path, meta: SnapshotMeta) -> None:
    snap = Snapshot(meta, b"state-machine\x00bytes" * 100)
    path = snapfile.save(tmp_path / "snap", snap)
    assert path.read_bytes().startswith(b"SHOALSN2")
    assert snapfile.load_latest(tmp_path / "snap") == snap


def test_newest_snapshot_file_wins_with_its_own_membership(tmp_path: Path) -> None:
    snapfile.save(tmp_path / "snap", Snapshot(SnapshotMeta(10, 1, (1, 2, 3), (4,)), b"old"))
    newer = Snapshot(SnapshotMeta(20, 2, (1, 2, 3, 4), (5,)), b"new")
    snapfile.save(tmp_path / "snap", newer)
    assert snapfile.load_latest(tmp_path / "snap") == newer


def test_snapshot_file_with_forged_counts_is_refused(tmp_path: Path) -> None:
    body = snapfile.MAGIC + struct.pack("<QQII", 5, 1, 1000, 2) + struct.pack("<Q", 1) + b"data"
    with pytest.raises(SnapshotCorrupt, match="too short for its 1000 voters and 2 learners"):
        snapfile.decode(tmp_path / "x.snap", body + struct.pack("<I", zlib.crc32(body)))


def test_old_format_snapshot_file_is_refused_by_name(tmp_path: Path) -> None:
    body = b"SHOALSN1" + struct.pack("<QQI", 5, 1, 1) + struct.pack("<Q", 1) + b"data"
    path = tmp_path / "snap" / "0000000000000005-0000000000000001.snap"
    path.parent.mkdir()
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(SnapshotCorrupt, match="old SHOALSN1 format"):
        snapfile.load_latest(tmp_path / "snap")
