"""Issue 15, encryption at rest: a store given a sealer writes nothing in clear.

The WAL (format 3) and snapshots (SHOALSN3) hold only sealed payloads; they open with the
manager's data key and with nothing else (a wrong key and an altered record are refused with
the WAL corruption line, not a traceback); a state dir written in clear is still read and is
encrypted by the snapshot the store takes when it opens it.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from shoal.statekeys import Sealer, new_key
from shoal.testing.store import RecordingMachine
from shoal_store_raft import RaftStore, snapfile
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.raft import Entry, HardState, Snapshot, SnapshotMeta
from shoal_store_raft.snapfile import SnapshotCorrupt
from shoal_store_raft.wal import WAL, WalCorruption, list_segments
from shoal_store_raft.walformat import HEADER, MAGIC_SEALED

BOOT = SnapshotMeta(0, 0, (7,))
SECRET = b"top-secret-service-name"


def files_under(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def sealed_wal(directory: Path, sealer: Sealer, count: int = 6) -> None:
    wal = WAL.create(directory, BOOT, HardState(), segment_bytes=600, sealer=sealer)
    for index in range(1, count + 1):
        wal.save([Entry(index, 1, SECRET + b"-%d" % index)], HardState(1, 7, index), sync=True)
    wal.close()


def test_sealed_wal_holds_no_clear_entry_and_reopens_with_its_key(tmp_path: Path) -> None:
    sealer = Sealer(new_key())
    sealed_wal(tmp_path / "wal", sealer)
    raw = files_under(tmp_path / "wal")
    assert len(raw) >= 2
    for path, data in raw.items():
        assert data.startswith(MAGIC_SEALED), path
        assert SECRET not in data, path
    wal, state = WAL.open(tmp_path / "wal", segment_bytes=600, sealer=sealer)
    wal.close()
    assert [e.data for e in state.entries] == [SECRET + b"-%d" % i for i in range(1, 7)]
    assert state.hard_state == HardState(1, 7, 6)


def test_sealed_wal_refuses_a_wrong_key_and_no_key_with_one_line(tmp_path: Path) -> None:
    sealed_wal(tmp_path / "wal", Sealer(new_key()))
    before = files_under(tmp_path / "wal")
    with pytest.raises(WalCorruption, match=r"is corrupt at offset \d+: the record does not decrypt"):
        WAL.open(tmp_path / "wal", sealer=Sealer(new_key()))
    with pytest.raises(WalCorruption, match=r"is encrypted \(.*\) and the store was given no key"):
        WAL.open(tmp_path / "wal")
    assert files_under(tmp_path / "wal") == before  # a refused open changes nothing


def test_altered_sealed_record_with_fixed_crcs_is_refused_as_corruption(tmp_path: Path) -> None:
    """An attacker who recomputes the CRCs still cannot change a record: GCM's tag refuses it."""
    sealer = Sealer(new_key())
    sealed_wal(tmp_path / "wal", sealer)
    first = list_segments(tmp_path / "wal")[0]
    raw = bytearray(first.read_bytes())
    off = len(MAGIC_SEALED)
    length, _, _ = HEADER.unpack_from(raw, off)
    start = off + HEADER.size
    raw[start + 20] ^= 0x01  # one bit of the first record's ciphertext
    payload_crc = zlib.crc32(raw[start : start + length])
    head = struct.pack("<II", length, payload_crc)
    raw[off : off + HEADER.size] = head + struct.pack("<I", zlib.crc32(head))
    first.write_bytes(bytes(raw))
    with pytest.raises(WalCorruption) as info:
        WAL.open(tmp_path / "wal", segment_bytes=600, sealer=sealer)
    message = str(info.value)
    assert "\n" not in message
    assert f"{first} is corrupt at offset {off}: the record does not decrypt" in message


def test_clear_wal_is_read_and_continued_in_a_sealed_segment(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path / "wal", BOOT, HardState())
    wal.save([Entry(1, 1, SECRET)], HardState(1, 7, 1), sync=True)
    wal.close()
    sealer = Sealer(new_key())
    wal, state = WAL.open(tmp_path / "wal", sealer=sealer)
    assert wal.holds_clear_records
    wal.save([Entry(2, 1, SECRET + b"-new")], HardState(1, 7, 2), sync=True)
    wal.close()
    segments = list_segments(tmp_path / "wal")
    assert len(segments) == 2 and segments[-1].read_bytes().startswith(MAGIC_SEALED)
    assert SECRET not in segments[-1].read_bytes()
    _, state = WAL.open(tmp_path / "wal", sealer=sealer)
    assert [e.data for e in state.entries] == [SECRET, SECRET + b"-new"]


def test_sealed_snapshot_opens_only_with_its_key(tmp_path: Path) -> None:
    sealer = Sealer(new_key())
    snap = Snapshot(SnapshotMeta(9, 2, (7,)), SECRET * 3)
    path = snapfile.save(tmp_path, snap, sealer)
    assert SECRET not in path.read_bytes()
    assert snapfile.load_latest(tmp_path, sealer) == snap
    with pytest.raises(SnapshotCorrupt, match="does not decrypt with this manager's key"):
        snapfile.load_latest(tmp_path, Sealer(new_key()))
    with pytest.raises(SnapshotCorrupt, match="is encrypted and the store was given no key"):
        snapfile.load_latest(tmp_path)
    # Data of another snapshot file (same key) does not open under this one's header.
    other = snapfile.encode(Snapshot(SnapshotMeta(10, 2, (7,)), b"x"), sealer)
    mine = path.read_bytes()
    head = len(snapfile.MAGIC_SEALED) + 24 + 8
    body = mine[:head] + other[head:-4]
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(SnapshotCorrupt, match="does not decrypt"):
        snapfile.load_latest(tmp_path, sealer)


async def test_store_state_written_in_clear_is_encrypted_when_opened_with_a_key(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, RaftOptions())
    await store.start(RecordingMachine(), bootstrap=True)
    await store.propose(SECRET)
    await store.stop()
    assert any(SECRET in data for data in files_under(tmp_path).values())

    sealer = Sealer(new_key())
    machine = RecordingMachine()
    store = RaftStore(tmp_path, RaftOptions(), sealer=sealer)
    await store.start(machine, bootstrap=False)
    assert SECRET in machine.state.values()
    await store.propose(SECRET + b"-after")
    await store.stop()
    for path, data in files_under(tmp_path).items():
        assert SECRET not in data, f"{path} still holds a clear record"

    machine = RecordingMachine()
    store = RaftStore(tmp_path, RaftOptions(), sealer=sealer)
    await store.start(machine, bootstrap=False)
    assert {SECRET, SECRET + b"-after"} <= set(machine.state.values())
    await store.stop()
