"""Snapshot files: one self-checking file per snapshot, written atomically.

Layout: magic ``SHOALSN2``, ``<QQII`` (index, term, voter count, learner count), the voter IDs
then the learner IDs as ``<Q``, the state machine's bytes, then a CRC32 of everything before
it. (``SHOALSN1`` files, without learners, are refused by name rather than misread: a restored
member that forgot its learners would stop replicating to them.) Names sort by index
(``<index:016x>-<term:016x>.snap``) so the newest is found without reading the others.

A newest file that does not verify (CRC, layout, or an index and term other than its name's)
refuses the open, like a corrupt WAL record: older snapshots are pruned as soon as a newer one
is durable and the WAL before the newest is released, so nothing older could rebuild the state
without losing acknowledged writes.

A store given a sealer (``PluginContext.sealer``) writes ``SHOALSN3`` files: the same layout,
but the state machine's bytes are sealed with the manager's data key, bound to the header
(so data moved between snapshot files does not open). The index, term and member IDs stay in
clear, as in Swarm. ``SHOALSN2`` files are still read, and replaced by the next snapshot.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

from shoal.plugin import AtRestSealer, StoreOpenError

from shoal_store_raft.files import atomic_write, fsync_dir
from shoal_store_raft.raft.types import Snapshot, SnapshotMeta

MAGIC = b"SHOALSN2"
MAGIC_SEALED = b"SHOALSN3"
SEAL_CONTEXT = b"shoal raft snapshot"
OLD_MAGIC = b"SHOALSN1"
_HEAD = struct.Struct("<QQII")
_CRC = struct.Struct("<I")
SUFFIX = ".snap"
_NAME = re.compile(r"[0-9a-f]{16}-[0-9a-f]{16}\.snap")


class SnapshotCorrupt(StoreOpenError):
    """The newest snapshot file does not verify; the store cannot safely open."""


def snapshot_name(meta: SnapshotMeta) -> str:
    return f"{meta.index:016x}-{meta.term:016x}{SUFFIX}"


def encode(snap: Snapshot, sealer: AtRestSealer | None = None) -> bytes:
    return b"".join(encode_parts(snap, sealer))


def encode_parts(snap: Snapshot, sealer: AtRestSealer | None = None) -> list[bytes]:
    """The file's bytes as (header, state machine's bytes, CRC): written one after the other,
    a large state is never copied to be framed (``encode`` joins them)."""
    meta = snap.meta
    head = b"".join(
        [
            MAGIC if sealer is None else MAGIC_SEALED,
            _HEAD.pack(meta.index, meta.term, len(meta.voters), len(meta.learners)),
            struct.pack(f"<{len(meta.voters) + len(meta.learners)}Q", *meta.voters, *meta.learners),
        ]
    )
    data = snap.data if sealer is None else sealer.seal(snap.data, SEAL_CONTEXT + head)
    return [head, data, _CRC.pack(zlib.crc32(data, zlib.crc32(head)))]


def decode(path: Path, raw: bytes, sealer: AtRestSealer | None = None) -> Snapshot:
    fixed = len(MAGIC) + _HEAD.size
    if raw.startswith(OLD_MAGIC):
        raise SnapshotCorrupt(f"snapshot file {path} is in the old SHOALSN1 format (no learners); remove it")
    sealed = raw.startswith(MAGIC_SEALED)
    if len(raw) < fixed + _CRC.size or not (sealed or raw.startswith(MAGIC)):
        raise SnapshotCorrupt(f"snapshot file {path} is truncated or not a shoal snapshot")
    if sealed and sealer is None:
        raise SnapshotCorrupt(f"snapshot file {path} is encrypted and the store was given no key to open it")
    (crc,) = _CRC.unpack_from(raw, len(raw) - _CRC.size)
    if zlib.crc32(memoryview(raw)[: len(raw) - _CRC.size]) != crc:
        raise SnapshotCorrupt(f"snapshot file {path} fails its CRC check")
    index, term, n_voters, n_learners = _HEAD.unpack_from(raw, len(MAGIC))
    data_start = fixed + 8 * (n_voters + n_learners)
    if data_start > len(raw) - _CRC.size:
        raise SnapshotCorrupt(
            f"snapshot file {path} is too short for its {n_voters} voters and {n_learners} learners"
        )
    ids = struct.unpack_from(f"<{n_voters + n_learners}Q", raw, fixed)
    data = raw[data_start : len(raw) - _CRC.size]
    if sealed:
        assert sealer is not None
        try:
            data = sealer.open(data, SEAL_CONTEXT + raw[:data_start])
        except ValueError:
            raise SnapshotCorrupt(
                f"snapshot file {path} does not decrypt with this manager's key (altered on disk, or "
                "sealed under another key)"
            ) from None
    meta = SnapshotMeta(index, term, ids[:n_voters], ids[n_voters:])
    if path.name != snapshot_name(meta):
        raise SnapshotCorrupt(
            f"snapshot file {path} holds index {index}, term {term}, which its name does not match"
        )
    return Snapshot(meta, data)


def save(directory: Path, snap: Snapshot, sealer: AtRestSealer | None = None) -> Path:
    """Write ``snap`` durably (tmp + fsync + rename + dir fsync); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / snapshot_name(snap.meta)
    atomic_write(path, encode_parts(snap, sealer))
    return path


def list_snapshots(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.fullmatch(p.name))


def load_latest(directory: Path, sealer: AtRestSealer | None = None) -> Snapshot | None:
    """The newest snapshot, or None. A corrupt newest file is fatal: older state would lose data."""
    paths = list_snapshots(directory)
    if not paths:
        return None
    return decode(paths[-1], paths[-1].read_bytes(), sealer)


def prune(directory: Path, keep_index: int) -> None:
    """Delete snapshot files older than the one at ``keep_index`` and stray temp files (not
    the temporary file of a newer snapshot: it may be being written, off the loop)."""
    removed = False
    for path in directory.iterdir():
        name = path.name.removeprefix(".tmp-")
        if _NAME.fullmatch(name) and int(name[:16], 16) >= keep_index:
            continue
        if path.name != name or _NAME.fullmatch(name):
            path.unlink(missing_ok=True)  # missing: another prune (an install's) took it
            removed = True
    if removed:
        fsync_dir(directory)
