"""The WAL on real files: round trip, overwrite, torn tails, mid-file corruption, segments."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from shoal_store_raft.raft import Entry, EntryKind, HardState, SnapshotMeta
from shoal_store_raft.wal import WAL, WalCorruption, list_segments

BOOT = SnapshotMeta(0, 0, (7,))


def entries(lo: int, hi: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [Entry(i, term, (b"%d:" % i) * size) for i in range(lo, hi + 1)]


def fresh(directory: Path, segment_bytes: int = 1 << 20) -> WAL:
    return WAL.create(directory, BOOT, HardState(), segment_bytes)


def test_round_trip_of_entries_and_hard_state(tmp_path: Path) -> None:
    wal = fresh(tmp_path / "wal")
    wal.save([Entry(1, 1, b"", EntryKind.NOOP), *entries(2, 50)], HardState(1, 7, 0), sync=True)
    wal.save([], HardState(1, 7, 50), sync=False)
    wal.close()
    wal2, state = WAL.open(tmp_path / "wal")
    wal2.close()
    assert state.hard_state == HardState(1, 7, 50)
    assert state.snapshot == BOOT
    assert [e.index for e in state.entries] == list(range(1, 51))
    assert state.entries[0].kind == EntryKind.NOOP and state.entries[5] == entries(6, 6)[0]


def test_a_later_entry_at_an_existing_index_replaces_the_suffix(tmp_path: Path) -> None:
    wal = fresh(tmp_path / "wal")
    wal.save(entries(1, 5, term=1), HardState(1, 0, 2), sync=True)
    wal.save(entries(3, 4, term=2), HardState(2, 0, 2), sync=True)
    wal.close()
    _, state = WAL.open(tmp_path / "wal")
    assert [(e.index, e.term) for e in state.entries] == [(1, 1), (2, 1), (3, 2), (4, 2)]


def test_create_refuses_an_existing_wal(tmp_path: Path) -> None:
    fresh(tmp_path / "wal").close()
    with pytest.raises(FileExistsError, match="already exists"):
        fresh(tmp_path / "wal")


@pytest.mark.parametrize("cut", [1, 5, 13])
def test_torn_last_record_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: int
) -> None:
    wal = fresh(tmp_path / "wal")
    wal.save(entries(1, 10), HardState(1, 0, 0), sync=True)
    wal.save(entries(11, 11), None, sync=True)
    wal.close()
    (segment,) = list_segments(tmp_path / "wal")
    size = segment.stat().st_size
    os.truncate(segment, size - cut)
    with caplog.at_level(logging.WARNING, logger="shoal.store.raft"):
        wal2, state = WAL.open(tmp_path / "wal")
    assert [e.index for e in state.entries] == list(range(1, 11))
    assert any("torn last record" in r.getMessage() and r.name == "shoal.store.raft" for r in caplog.records)
    # The file was cut back to the last good record and appending continues cleanly.
    wal2.save(entries(11, 12), None, sync=True)
    wal2.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shoal.store.raft"):
        _, state = WAL.open(tmp_path / "wal")
    assert [e.index for e in state.entries] == list(range(1, 13))
    assert not caplog.records


def test_a_complete_last_record_that_fails_its_crc_is_refused_not_dropped(tmp_path: Path) -> None:
    """A crash leaves a short record, never a whole one with wrong bytes: a bad disk does, and
    that record may have been acknowledged."""
    wal = fresh(tmp_path / "wal")
    wal.save(entries(1, 10), None, sync=True)
    wal.close()
    (segment,) = list_segments(tmp_path / "wal")
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorruption, match="fails its CRC check"):
        WAL.open(tmp_path / "wal")
    assert segment.read_bytes() == bytes(data)


def test_zero_filled_tail_is_dropped(tmp_path: Path) -> None:
    wal = fresh(tmp_path / "wal")
    wal.save(entries(1, 3), None, sync=True)
    wal.close()
    (segment,) = list_segments(tmp_path / "wal")
    with open(segment, "ab") as fh:
        fh.write(b"\0" * 64)
    _, state = WAL.open(tmp_path / "wal")
    assert [e.index for e in state.entries] == [1, 2, 3]


def test_corruption_in_the_middle_is_fatal_and_names_file_and_offset(tmp_path: Path) -> None:
    wal = fresh(tmp_path / "wal")
    wal.save(entries(1, 10), None, sync=True)
    wal.close()
    (segment,) = list_segments(tmp_path / "wal")
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as info:
        WAL.open(tmp_path / "wal")
    message = str(info.value)
    assert str(segment) in message and "at offset" in message
    offset = int(message.split("at offset ")[1].split(":")[0])
    assert 0 < offset <= middle


def test_corruption_in_an_earlier_segment_is_fatal_even_at_its_end(tmp_path: Path) -> None:
    wal = fresh(tmp_path / "wal", segment_bytes=512)
    for i in range(1, 40):
        wal.save(entries(i, i), None, sync=True)
    wal.close()
    segments = list_segments(tmp_path / "wal")
    assert len(segments) > 2
    os.truncate(segments[0], segments[0].stat().st_size - 3)
    with pytest.raises(WalCorruption, match=segments[0].name):
        WAL.open(tmp_path / "wal")


def test_segments_roll_and_release_drops_only_wholly_covered_ones(tmp_path: Path) -> None:
    wal = fresh(tmp_path / "wal", segment_bytes=512)
    for i in range(1, 101):
        wal.save(entries(i, i), HardState(1, 7, i - 1), sync=True)
    before = list_segments(tmp_path / "wal")
    assert len(before) > 5
    meta = SnapshotMeta(60, 1, (7,))
    wal.save_snapshot(meta)
    removed = wal.release_to(60)
    after = list_segments(tmp_path / "wal")
    assert removed and set(removed) | set(after) == set(before)
    assert before[0] in removed and before[-1] in after
    wal.close()
    _, state = WAL.open(tmp_path / "wal")
    # Every entry after the snapshot is still there, and the hard state survived the deletions.
    assert [e.index for e in state.entries] == list(range(61, 101))
    assert state.snapshot == meta and state.hard_state == HardState(1, 7, 99)
