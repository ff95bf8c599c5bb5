"""How WAL segments are framed on disk, and the one rule that tells a torn tail from corruption.

**Format 2** (every segment written since issue 13): the segment opens with ``MAGIC``; each
record is ``<III`` (payload length, CRC32 of the payload, CRC32 of those first 8 bytes) and
then the payload. The header CRC is what lets recovery trust a length: without it a flipped
bit in a length in the middle of a segment looked exactly like a record cut short by a crash,
and the "torn" tail that was cut away held megabytes of acknowledged entries.

**Format 3** (a store given a sealer, ``PluginContext.sealer``: every manager since issue 15):
framed exactly as format 2 under its own magic, but each payload is the record *sealed*
(AES-256-GCM with the manager's data key, ``shoal.statekeys``): nothing of an entry, not even
its index or term, is in clear. The CRCs cover the sealed bytes, so the torn/corrupt rule below
is unchanged; a record whose CRCs verify but which does not open is corruption (or the wrong
key), reported like any other.

**Format 1** (segments written before): no magic; ``<II`` (payload length, payload CRC), then
the payload. Still read, never written: a WAL whose last segment is format 1 continues in a
new format-2 segment.

**Torn or corrupt.** Every write is fsynced before anything in it is acknowledged, and a crash
(process killed, power lost) leaves a *prefix* of the last unsynced writes: the file ends early,
or the filesystem extended it and the data never arrived (zeros). It never leaves a complete
record with other bytes in it. So a bad record at offset O is a torn tail, dropped with a
warning, only when it is in the last segment and one of these holds:

1. fewer bytes than a record header remain after O (the crash cut a header);
2. every byte after the header at O is zero (nothing of a payload reached the disk; a real
   payload starts with a non-zero record type, so no acknowledged record looks like this);
3. format 2: the header verifies its CRC and its payload runs past the end of the file (a
   prefix of one record: nothing can follow it);
4. format 1, whose header cannot be verified: the payload runs past the end of the file and
   fewer bytes follow the header than the smallest payload we write, so neither this record
   nor any later one can be complete.

Anything else is corruption of data that may have been acknowledged: the store refuses to open
and names the file and the offset. That includes a record whose bytes are all there but whose
payload fails its CRC, even at the very end: a crash cannot produce it, a bad disk can.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from shoal.plugin import StoreOpenError

MAGIC = b"SHWAL\x00\x02\n"
MAGIC_SEALED = b"SHWAL\x00\x03\n"
HEADER = struct.Struct("<III")
HEADER_V1 = struct.Struct("<II")
_LENGTH_CRC = struct.Struct("<II")
_U32 = struct.Struct("<I")

#: The smallest payload ever written: an ENTRY head (type, index, term, kind) with no data.
MIN_PAYLOAD = 18

_crc32 = zlib.crc32


class WalCorruption(StoreOpenError):
    """Acknowledged data in the WAL does not verify; the store must not open on it."""


def frame(payload_length: int, payload_crc: int) -> bytes:
    """The format-2 header of a payload of ``payload_length`` bytes with CRC ``payload_crc``."""
    head = _LENGTH_CRC.pack(payload_length, payload_crc)
    return head + _U32.pack(_crc32(head))


def record(payload: bytes) -> bytes:
    """One complete format-2 record."""
    return frame(len(payload), _crc32(payload)) + payload


@dataclass(frozen=True)
class Layout:
    """Where a segment's records start and how they are framed."""

    version: int
    start: int
    header: struct.Struct


V2 = Layout(2, len(MAGIC), HEADER)
V3 = Layout(3, len(MAGIC_SEALED), HEADER)
V1 = Layout(1, 0, HEADER_V1)


@dataclass
class Scan:
    """A segment's verified records as ``(offset, payload start, payload end)`` and, when its
    tail is torn, the offset to cut it at and why."""

    layout: Layout | None
    records: list[tuple[int, int, int]]
    torn_at: int | None = None
    torn_reason: str = ""


def scan_segment(path: Path, raw: bytes, *, is_last: bool) -> Scan:
    """Verify every record of one segment; raise ``WalCorruption`` on anything not torn.

    ``layout`` is None for a last segment that holds nothing but a prefix of ``MAGIC``: a crash
    while a new segment was being created (the WAL gives it its header again).
    """
    if raw.startswith(MAGIC):
        layout = V2
    elif raw.startswith(MAGIC_SEALED):
        layout = V3
    elif is_last and (MAGIC.startswith(raw) or MAGIC_SEALED.startswith(raw)):
        return Scan(None, [], 0 if raw else None, "a segment header cut short" if raw else "")
    elif not raw:
        raise WalCorruption(f"raft WAL {path} is empty but later segments exist: its records were lost")
    else:
        layout = V1
    size = len(raw)
    header = layout.header
    records: list[tuple[int, int, int]] = []
    off = layout.start
    while off < size:
        problem, header_ok, past_end = _check_record(raw, off, layout)
        if problem:
            if is_last and _is_torn(raw, off, layout, header_ok=header_ok, past_end=past_end):
                return Scan(layout, records, off, problem)
            raise WalCorruption(f"raft WAL {path} is corrupt at offset {off}: {problem}")
        length = _U32.unpack_from(raw, off)[0]
        start = off + header.size
        records.append((off, start, start + length))
        off = start + length
    return Scan(layout, records)


def _check_record(raw: bytes, off: int, layout: Layout) -> tuple[str, bool, bool]:
    """``(problem or "", header verified, payload runs past the end of the file)``."""
    size, header = len(raw), layout.header
    if size - off < header.size:
        return "truncated record header", False, False
    if layout.version >= 2:
        length, crc, head_crc = HEADER.unpack_from(raw, off)
        if _crc32(memoryview(raw)[off : off + 8]) != head_crc:
            return "record header fails its CRC check", False, False
    else:
        length, crc = HEADER_V1.unpack_from(raw, off)
    end = off + header.size + length
    if end > size:
        return f"record of {length} bytes runs past the end of the file", True, True
    if length == 0:
        return "empty record", True, False
    if _crc32(memoryview(raw)[off + header.size : end]) != crc:
        return "record fails its CRC check", True, False
    return "", True, False


def _is_torn(raw: bytes, off: int, layout: Layout, *, header_ok: bool, past_end: bool) -> bool:
    """The rule of the module docstring: can nothing from ``off`` on have been acknowledged?"""
    size, header_size = len(raw), layout.header.size
    if size - off < header_size:
        return True
    if raw.count(0, off + header_size) == size - off - header_size:
        return True
    if layout.version >= 2:
        return header_ok and past_end
    return past_end and size - off - header_size < MIN_PAYLOAD
