"""The write-ahead log: append-only, CRC-checked records in segment files.

Records are framed as ``walformat`` describes (a header with the payload length, the payload's
CRC32 and a CRC32 of the header itself); the payload's first byte is the record type:

* ENTRY ``<BQQB`` type, index, term, kind, then the entry data. A later ENTRY at an index that
  is already present replaces it and everything after it (a new leader overwrote our suffix).
* HARDSTATE ``<BQQQ`` type, term, vote, commit. The last one wins.
* SNAPSHOT ``<BQQII`` type, index, term, voter count, learner count, then the voter IDs and
  then the learner IDs as ``<Q``: the log now starts after ``index``, with that membership
  (written after the snapshot file is durable; index 0 marks a fresh group). Learners are kept
  so a restarted member still replicates to (and never counts votes from) its learners.

Segments are named ``<seq:016x>-<first index:016x>.wal``. Every segment opens with the format
magic, the latest SNAPSHOT marker and HARDSTATE, so deleting older segments (compaction) never
loses them.

Encryption at rest: a WAL given a sealer (the store's ``PluginContext.sealer``) writes format
3 segments, whose every payload is sealed (``walformat``). Segments written in clear before
(format 1 or 2) are still read; the WAL then continues in a new sealed segment, and the store
takes a snapshot at once so that compaction deletes the clear ones.

Recovery: only a torn tail of the last segment (what a crash in the middle of a write leaves;
it was never acknowledged, as we fsync before acknowledging) is cut away, with a warning;
``walformat`` gives the exact rule. Anything else that does not verify, anywhere, may be
acknowledged data: the WAL refuses to open and names the file and offset, and changes nothing.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shoal.plugin import AtRestSealer

from shoal_store_raft.files import fsync_dir
from shoal_store_raft.raft.types import Entry, EntryKind, HardState, SnapshotMeta
from shoal_store_raft.walformat import MAGIC, MAGIC_SEALED, WalCorruption, frame, record, scan_segment

log = logging.getLogger("shoal.store.raft")

ENTRY = struct.Struct("<BQQB")
HARDSTATE = struct.Struct("<BQQQ")
SNAPMARK = struct.Struct("<BQQII")
T_ENTRY, T_HARDSTATE, T_SNAPSHOT = 1, 2, 3
SUFFIX = ".wal"
DEFAULT_SEGMENT_BYTES = 64 << 20
#: Bound into every sealed WAL payload, so a sealed snapshot or another value never opens as one.
SEAL_CONTEXT = b"shoal raft WAL record"

_crc32 = zlib.crc32
_ENTRY_KINDS = frozenset(kind.value for kind in EntryKind)


@dataclass
class WalState:
    """What replaying the WAL yields."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta = field(default_factory=lambda: SnapshotMeta(0, 0, ()))
    entries: list[Entry] = field(default_factory=list)


def _segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016x}-{first_index:016x}{SUFFIX}"


def _parse_name(path: Path) -> tuple[int, int]:
    seq, _, first = path.name[: -len(SUFFIX)].partition("-")
    try:
        return int(seq, 16), int(first, 16)
    except ValueError:
        raise WalCorruption(
            f"{path} is not a raft WAL segment (names are <seq>-<first index>{SUFFIX}); move it out of "
            f"{path.parent}"
        ) from None


def _sealed_record(payload: bytes, sealer: AtRestSealer | None) -> bytes:
    return record(payload if sealer is None else sealer.seal(payload, SEAL_CONTEXT))


def encode_hard_state(hs: HardState, sealer: AtRestSealer | None = None) -> bytes:
    return _sealed_record(HARDSTATE.pack(T_HARDSTATE, hs.term, hs.vote, hs.commit), sealer)


def encode_snapshot_marker(meta: SnapshotMeta, sealer: AtRestSealer | None = None) -> bytes:
    voters, learners = meta.voters, meta.learners
    return _sealed_record(
        SNAPMARK.pack(T_SNAPSHOT, meta.index, meta.term, len(voters), len(learners))
        + struct.pack(f"<{len(voters) + len(learners)}Q", *voters, *learners),
        sealer,
    )


def encode_entries(entries: Sequence[Entry], parts: list[bytes], sealer: AtRestSealer | None = None) -> None:
    """Append the records for ``entries`` to ``parts`` (in clear: no copy of the entry data)."""
    pack_entry, size = ENTRY.pack, ENTRY.size
    for e in entries:
        head = pack_entry(T_ENTRY, e.index, e.term, e.kind)
        data = e.data
        if sealer is not None:
            parts.append(record(sealer.seal(head + data, SEAL_CONTEXT)))
            continue
        parts.append(frame(size + len(data), _crc32(data, _crc32(head))))
        parts.append(head)
        if data:
            parts.append(data)


class WAL:
    """An open WAL positioned for appending. Not thread-safe; one writer (the driver)."""

    def __init__(self, directory: Path, segment_bytes: int, sealer: AtRestSealer | None = None) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.sealer = sealer
        self._magic = MAGIC if sealer is None else MAGIC_SEALED
        #: Whether replay read segments written in clear (the store snapshots to retire them).
        self.holds_clear_records = False
        self._fd = -1
        self._seq = 0
        self._size = 0
        self._last_index = 0
        self._hard_state = HardState()
        self._snapshot = SnapshotMeta(0, 0, ())
        self.syncs = 0  # fsync count, for tests and benchmarks
        #: Bytes written since this WAL was opened, plus what its segments held then: the
        #: store snapshots once enough were written since its last snapshot (a count of
        #: entries alone let a WAL of big entries grow to 1.3 GB between two snapshots).
        self.written = 0

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        directory: Path,
        snapshot: SnapshotMeta,
        hard_state: HardState,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        sealer: AtRestSealer | None = None,
    ) -> WAL:
        """Start a new WAL (bootstrap). Refuses a directory that already holds segments."""
        directory.mkdir(parents=True, exist_ok=True)
        if any(p.name.endswith(SUFFIX) for p in directory.iterdir()):
            raise FileExistsError(f"a raft WAL already exists in {directory}")
        wal = cls(directory, segment_bytes, sealer)
        wal._snapshot = snapshot
        wal._hard_state = hard_state
        wal._last_index = snapshot.index
        wal._open_segment(0, snapshot.index + 1)
        fsync_dir(directory.parent)
        return wal

    @classmethod
    def open(
        cls,
        directory: Path,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        verify: Callable[[WalState], None] | None = None,
        sealer: AtRestSealer | None = None,
    ) -> tuple[WAL, WalState]:
        """Replay every segment; cut a torn tail; return the WAL ready to append.

        Raises ``WalCorruption`` when any record that may have been acknowledged does not
        verify. That, and whatever ``verify`` raises on the replayed state, happens before
        the WAL writes anything: a refused open changes nothing on disk.
        """
        segments = list_segments(directory)
        if not segments:
            raise FileNotFoundError(f"no raft WAL segments in {directory}")
        for path in segments:
            _parse_name(path)
        state = WalState()
        entries = state.entries
        cut: tuple[Path, int, str] | None = None
        layout_version = 0
        clear = False
        for n, path in enumerate(segments):
            cut, layout_version = _replay_segment(
                path, state, entries, is_last=n == len(segments) - 1, sealer=sealer
            )
            clear = clear or layout_version in (1, 2)
        if verify is not None:
            verify(state)
        if cut is not None:
            path, offset, problem = cut
            log.warning(
                "raft WAL %s: dropping torn last record at offset %d (%s): a crash cut it short "
                "before it was acknowledged",
                path,
                offset,
                problem,
            )
            with open(path, "r+b") as fh:
                fh.truncate(offset)
                os.fsync(fh.fileno())
        wal = cls(directory, segment_bytes, sealer)
        wal.holds_clear_records = clear and sealer is not None
        wal._hard_state = state.hard_state
        wal._snapshot = state.snapshot
        wal._last_index = entries[-1].index if entries else state.snapshot.index
        wal._seq = _parse_name(segments[-1])[0]
        wal._fd = os.open(segments[-1], os.O_WRONLY | os.O_APPEND)
        wal._size = os.fstat(wal._fd).st_size
        wal.written = sum(path.stat().st_size for path in segments[:-1]) + wal._size
        wanted = 2 if sealer is None else 3
        if wal._size == 0:
            # A crash while rolling left a segment without its header: give it one again.
            wal._write(wal._magic + wal._segment_head())
            os.fsync(wal._fd)
        elif layout_version == wanted and wal._size == len(wal._magic):
            wal._write(wal._segment_head())
            os.fsync(wal._fd)
        elif layout_version != wanted:
            wal._roll()  # never append records of another format (or sealing) to a segment
        return wal, state

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def hard_state(self) -> HardState:
        """The last hard state written (its term and vote were synced: a Ready that changes
        them must sync)."""
        return self._hard_state

    # ------------------------------------------------------------------ writing

    def save(self, entries: Sequence[Entry], hard_state: HardState | None, sync: bool) -> None:
        """Append entries then the hard state in one write; fsync when ``sync``.

        One call per Ready: concurrent proposals collected in one Ready share this one fsync.
        """
        parts: list[bytes] = []
        if entries:
            encode_entries(entries, parts, self.sealer)
            self._last_index = entries[-1].index
        if hard_state is not None:
            parts.append(encode_hard_state(hard_state, self.sealer))
            self._hard_state = hard_state
        if parts:
            self._write(b"".join(parts))
        if sync:
            os.fdatasync(self._fd)
            self.syncs += 1
        if self._size >= self.segment_bytes:
            self._roll()

    def save_snapshot(self, meta: SnapshotMeta) -> None:
        """Record (durably) that the log now starts after ``meta.index``."""
        self._snapshot = meta
        self._last_index = max(self._last_index, meta.index)
        self._write(encode_snapshot_marker(meta, self.sealer))
        os.fdatasync(self._fd)
        self.syncs += 1

    def release_to(self, index: int) -> list[Path]:
        """Delete segments whose every live entry is at or before ``index``; returns them."""
        segments = list_segments(self.directory)
        doomed = []
        for cur, nxt in itertools.pairwise(segments):
            if _parse_name(nxt)[1] - 1 <= index:
                doomed.append(cur)
            else:
                break
        for path in doomed:
            os.unlink(path)
        if doomed:
            fsync_dir(self.directory)
        return doomed

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._size += len(data)
        self.written += len(data)

    def _roll(self) -> None:
        os.fdatasync(self._fd)
        os.close(self._fd)
        self._open_segment(self._seq + 1, self._last_index + 1)

    def _open_segment(self, seq: int, first_index: int) -> None:
        path = self.directory / _segment_name(seq, first_index)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._seq = seq
        self._size = 0
        self._write(self._magic + self._segment_head())
        os.fsync(self._fd)
        fsync_dir(self.directory)

    def _segment_head(self) -> bytes:
        """What follows the magic of every segment: the snapshot marker and the hard state."""
        return encode_snapshot_marker(self._snapshot, self.sealer) + encode_hard_state(
            self._hard_state, self.sealer
        )


def list_segments(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


def _replay_segment(
    path: Path, state: WalState, entries: list[Entry], is_last: bool, sealer: AtRestSealer | None = None
) -> tuple[tuple[Path, int, str] | None, int]:
    """Apply one segment's records; returns where its torn tail starts (if it has one) and
    its format version (0 for a segment that holds nothing yet)."""
    raw = path.read_bytes()
    scan = scan_segment(path, raw, is_last=is_last)
    sealed = scan.layout is not None and scan.layout.version == 3
    if sealed and sealer is None:
        raise WalCorruption(
            f"raft WAL {path} is encrypted (sealed-format magic at offset 0) and the store was "
            "given no key to open it (a manager's store opens only through its daemon)"
        )
    for off, start, end in scan.records:
        if not sealed:
            _apply_record(path, off, raw, start, end, state, entries)
            continue
        assert sealer is not None
        try:
            payload = sealer.open(raw[start:end], SEAL_CONTEXT)
        except ValueError:
            raise WalCorruption(
                f"raft WAL {path} is corrupt at offset {off}: the record does not decrypt with this "
                "manager's key (altered on disk, or sealed under another key)"
            ) from None
        _apply_record(path, off, payload, 0, len(payload), state, entries)
    cut = None if scan.torn_at is None else (path, scan.torn_at, scan.torn_reason)
    return cut, scan.layout.version if scan.layout is not None else 0


def _apply_record(
    path: Path, off: int, raw: bytes, start: int, end: int, state: WalState, entries: list[Entry]
) -> None:
    kind = raw[start]
    smallest = {T_ENTRY: ENTRY.size, T_HARDSTATE: HARDSTATE.size, T_SNAPSHOT: SNAPMARK.size}.get(kind, 1)
    if end - start < smallest:
        raise WalCorruption(f"raft WAL {path} is corrupt at offset {off}: record of type {kind} is too short")
    if kind == T_ENTRY:
        _, index, term, ekind = ENTRY.unpack_from(raw, start)
        if ekind not in _ENTRY_KINDS:
            raise WalCorruption(f"raft WAL {path} is corrupt at offset {off}: unknown entry kind {ekind}")
        entry = Entry(index, term, raw[start + ENTRY.size : end], EntryKind(ekind))
        if entries:
            first = entries[0].index
            if index <= entries[-1].index:
                del entries[max(index - first, 0) :]
            elif index != entries[-1].index + 1:
                raise WalCorruption(
                    f"raft WAL {path} is corrupt at offset {off}: entry {index} follows {entries[-1].index}"
                )
        entries.append(entry)
    elif kind == T_HARDSTATE:
        _, term, vote, commit = HARDSTATE.unpack_from(raw, start)
        state.hard_state = HardState(term, vote, commit)
    elif kind == T_SNAPSHOT:
        _, index, term, n_voters, n_learners = SNAPMARK.unpack_from(raw, start)
        if end - start != SNAPMARK.size + 8 * (n_voters + n_learners):
            raise WalCorruption(
                f"raft WAL {path} is corrupt at offset {off}: snapshot marker of {end - start} bytes "
                f"does not hold {n_voters} voters and {n_learners} learners"
            )
        ids = struct.unpack_from(f"<{n_voters + n_learners}Q", raw, start + SNAPMARK.size)
        if index >= state.snapshot.index:
            state.snapshot = SnapshotMeta(index, term, ids[:n_voters], ids[n_voters:])
            while entries and entries[0].index <= index:
                if entries[-1].index <= index:
                    entries.clear()
                    break
                del entries[: index - entries[0].index + 1]
    else:
        raise WalCorruption(f"raft WAL {path} is corrupt at offset {off}: unknown record type {kind}")
