"""Issue 13, defect 2: damage to the WAL never opens the store on fewer acknowledged entries.

Every record here was fsynced (acknowledged). Each trial damages a pristine copy of the WAL
(one flipped header bit, or random bytes somewhere) and opens it: the WAL must either replay
every acknowledged entry or refuse with one line naming the file and the offset, leaving the
files as they were.
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path

import pytest
from shoal_store_raft import snapfile
from shoal_store_raft.raft import Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from shoal_store_raft.snapfile import SnapshotCorrupt
from shoal_store_raft.wal import (
    ENTRY,
    HARDSTATE,
    SNAPMARK,
    T_ENTRY,
    T_HARDSTATE,
    T_SNAPSHOT,
    WAL,
    WalCorruption,
    list_segments,
)

BOOT = SnapshotMeta(0, 0, (7,))
LAST = 24
FINAL_HARD_STATE = HardState(3, 7, LAST)

#: Format 2 segments open with this magic and frame records with 12-byte headers. The helpers
#: below read format 1 too (8-byte headers, no magic), so that this test also ran, and failed,
#: against the WAL from before the fix.
V2_MAGIC = b"SHWAL\x00\x02\n"


def build(directory: Path) -> dict[str, bytes]:
    """A small acknowledged WAL over three segments; returns its files' bytes by name."""
    wal = WAL.create(directory, BOOT, HardState(), segment_bytes=400)
    for index in range(1, LAST + 1):
        data = b"" if index % 5 == 0 else b"e%d-" % index * (index % 4 + 1)
        wal.save([Entry(index, 1 + index // 10, data)], HardState(1 + index // 10, 7, index - 1), sync=True)
    wal.save([], FINAL_HARD_STATE, sync=True)
    wal.close()
    files = {p.name: p.read_bytes() for p in list_segments(directory)}
    assert len(files) >= 3
    return files


def header_spans(raw: bytes) -> list[range]:
    """The byte offsets of every record header in a segment (and of its magic)."""
    if raw.startswith(V2_MAGIC):
        spans, off, size = [range(len(V2_MAGIC))], len(V2_MAGIC), 12
    else:
        spans, off, size = [], 0, 8
    while off + size <= len(raw):
        (length,) = struct.unpack_from("<I", raw, off)
        spans.append(range(off, off + size))
        off += size + length
    assert off == len(raw)
    return spans


def restore(directory: Path, files: dict[str, bytes]) -> None:
    """Make the WAL directory hold exactly ``files``, rewriting in place: truncating a file to
    zero and refilling it makes ext4 flush it on close, which would cost seconds here."""
    for path in list_segments(directory):
        if path.name not in files:
            path.unlink()
    for name, raw in files.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, raw, 0)
            os.ftruncate(fd, len(raw))
        finally:
            os.close(fd)


def check_trial(directory: Path, damaged: dict[str, bytes], what: str) -> str:
    """Open the damaged WAL; returns "opened" or "refused", failing on any other outcome."""
    try:
        wal, state = WAL.open(directory)
    except WalCorruption as exc:
        message = str(exc)
        assert "\n" not in message, f"{what}: {message!r}"
        assert str(directory) in message and " at offset " in message, f"{what}: {message}"
        now = {p.name: p.read_bytes() for p in list_segments(directory)}
        assert now == damaged, f"{what}: the refused open changed the WAL"
        return "refused"
    wal.close()
    indexes = [e.index for e in state.entries]
    assert indexes == list(range(1, LAST + 1)), f"{what}: opened with entries {indexes}"
    assert state.hard_state == FINAL_HARD_STATE, f"{what}: opened with {state.hard_state}"
    return "opened"


def test_every_flipped_header_bit_of_every_record_is_refused_or_loses_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    files = build(directory)
    outcomes: dict[str, int] = {}
    for name, raw in files.items():
        for span in header_spans(raw):
            for offset in span:
                for bit in range(8):
                    damaged_raw = bytearray(raw)
                    damaged_raw[offset] ^= 1 << bit
                    damaged = {**files, name: bytes(damaged_raw)}
                    restore(directory, damaged)
                    what = f"{name}: bit {bit} of byte {offset} flipped"
                    result = check_trial(directory, damaged, what)
                    outcomes[result] = outcomes.get(result, 0) + 1
    assert outcomes.get("refused", 0) > 500, outcomes


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_anywhere_are_refused_or_lose_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    directory = tmp_path / "wal"
    files = build(directory)
    names = sorted(files)
    for trial in range(400):
        name = rng.choice(names)
        raw = bytearray(files[name])
        at = rng.randrange(len(raw) + 1)
        garbage = rng.randbytes(rng.randint(1, 24))
        raw[at : at + len(garbage)] = garbage  # past the end, this appends
        damaged = {**files, name: bytes(raw)}
        restore(directory, damaged)
        check_trial(directory, damaged, f"seed {seed} trial {trial}: {garbage.hex()} at {name}:{at}")


def test_a_length_flipped_in_the_middle_is_refused_with_its_offset(tmp_path: Path) -> None:
    """The probe's case: the top byte of a length, so the record "runs past the end"."""
    directory = tmp_path / "wal"
    files = build(directory)
    name = sorted(files)[-1]
    spans = header_spans(files[name])
    victim = spans[len(spans) // 2].start
    raw = bytearray(files[name])
    raw[victim + 3] ^= 0x40
    restore(directory, {**files, name: bytes(raw)})
    with pytest.raises(WalCorruption, match=rf"{name} is corrupt at offset {victim}: "):
        WAL.open(directory)


# ------------------------------------------------------------------ format-1 segments (before the fix)


def v1_record(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def v1_segment(directory: Path, last: int) -> Path:
    """A segment as the WAL wrote it before format 2: marker, hard state, entries 1..last."""
    directory.mkdir(parents=True)
    parts = [
        v1_record(SNAPMARK.pack(T_SNAPSHOT, 0, 0, 1, 0) + struct.pack("<Q", 7)),
        v1_record(HARDSTATE.pack(T_HARDSTATE, 1, 7, 0)),
    ]
    for index in range(1, last + 1):
        parts.append(v1_record(ENTRY.pack(T_ENTRY, index, 1, EntryKind.NORMAL) + b"old%d" % index))
    parts.append(v1_record(HARDSTATE.pack(T_HARDSTATE, 1, 7, last)))
    path = directory / "0000000000000000-0000000000000001.wal"
    path.write_bytes(b"".join(parts))
    return path


def test_a_format_1_wal_still_opens_and_continues_in_a_format_2_segment(tmp_path: Path) -> None:
    """State dirs from before format 2 start; a torn format-1 tail is still cut (fewer bytes
    follow its header than any record needs), and new records never go into that segment."""
    directory = tmp_path / "wal"
    old = v1_segment(directory, 6)
    before = old.read_bytes()
    torn = v1_record(ENTRY.pack(T_ENTRY, 7, 1, EntryKind.NORMAL) + b"x" * 40)[:20]
    old.write_bytes(before + torn)
    wal, state = WAL.open(directory)
    assert [e.data for e in state.entries] == [b"old%d" % i for i in range(1, 7)]
    assert state.hard_state == HardState(1, 7, 6) and state.snapshot == SnapshotMeta(0, 0, (7,))
    wal.save([Entry(7, 1, b"new7")], HardState(1, 7, 7), sync=True)
    wal.close()
    assert old.read_bytes() == before, (
        "the torn tail stayed, or format-2 records went into a format-1 segment"
    )
    newer = list_segments(directory)[-1]
    assert newer != old and newer.read_bytes().startswith(V2_MAGIC)
    _, state = WAL.open(directory)
    assert [e.index for e in state.entries] == list(range(1, 8)) and state.hard_state.commit == 7


def test_a_format_1_length_damaged_in_the_middle_is_refused(tmp_path: Path) -> None:
    """Format 1 has no header CRC: a record that runs past the end is torn only when too few
    bytes follow it to hold any record."""
    directory = tmp_path / "wal"
    path = v1_segment(directory, 6)
    raw = bytearray(path.read_bytes())
    victim = header_spans(bytes(raw))[4].start
    raw[victim + 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(WalCorruption, match=f"corrupt at offset {victim}: record of .* runs past the end"):
        WAL.open(directory)
    assert path.read_bytes() == bytes(raw)


# ------------------------------------------------------------------ snapshot files


def test_a_snapshot_file_that_does_not_match_its_name_is_refused(tmp_path: Path) -> None:
    """A file that verifies but is not the snapshot its name says (copied, or a damaged
    directory entry) would make the store start from the wrong index."""
    saved = snapfile.save(tmp_path / "snap", Snapshot(SnapshotMeta(10, 1, (7,)), b"state"))
    saved.rename(saved.with_name("0000000000000020-0000000000000001.snap"))
    with pytest.raises(SnapshotCorrupt, match="holds index 10, term 1, which its name does not match"):
        snapfile.load_latest(tmp_path / "snap")


def test_stray_files_in_the_snapshot_and_wal_directories_are_named_not_a_traceback(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory)
    (directory / "notes.wal").write_text("x")
    with pytest.raises(WalCorruption, match=r"notes.wal is not a raft WAL segment .* move it out"):
        WAL.open(directory)
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "backup.snap").write_text("x")
    snapfile.prune(tmp_path / "snap", 100)
    assert snapfile.load_latest(tmp_path / "snap") is None
