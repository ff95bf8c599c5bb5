"""The wire codec for Raft messages: the bytes the kernel carries between managers.

The kernel's transport is opaque, so this module alone decides the format. It is on the hot
path of every replication round, hence ``struct`` with one pack per fixed-size header, entry
headers kept in one contiguous table (decoded with a single ``iter_unpack``) and payloads
joined once, never per-field Python objects.

Layout (all integers little-endian; IDs, terms and indexes are ``u64``):

* frame ``<BI``: codec version (:data:`VERSION`), message count; then the messages back to back.
* message ``<BQQQQQQBQIIB``: type, to, frm, term, log_term, index, commit, reject (0/1),
  reject_hint, entry count, context length, has-snapshot (0/1); then
  the context bytes;
  the entry header table, one ``<QQBI`` (index, term, kind, data length) per entry;
  the entries' data, concatenated in order;
  if has-snapshot: ``<QQIIQQI`` (meta index, meta term, voter count, learner count, chunk
  offset, snapshot total, chunk data length), the voter IDs as ``<Q``, the learner IDs as
  ``<Q``, then the chunk data.

A peer's bytes are untrusted: every length is checked against what is left before it is used,
so garbled or truncated input raises :class:`CodecError` naming the problem, never an
``IndexError``/``struct.error`` and never a huge allocation from a forged count.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from shoal_store_raft.raft.types import Entry, EntryKind, Message, MsgType, SnapshotChunk, SnapshotMeta

#: Bumped on any incompatible layout change; a peer speaking another version is refused.
VERSION = 1

_FRAME = struct.Struct("<BI")
_MSG = struct.Struct("<BQQQQQQBQIIB")
_ENTRY = struct.Struct("<QQBI")
_SNAP = struct.Struct("<QQIIQQI")
_U64 = 8

_MSG_TYPES = {int(t): t for t in MsgType}
_KINDS = {int(k): k for k in EntryKind}


class CodecError(ValueError):
    """Bytes that are not a valid encoding of Raft messages (or a message that cannot be encoded)."""


def encode_messages(msgs: Sequence[Message]) -> bytes:
    """Encode ``msgs`` into one frame; entry and snapshot data are joined, not re-copied per field."""
    parts: list[bytes] = [_FRAME.pack(VERSION, len(msgs))]
    append, extend = parts.append, parts.extend
    pack_msg, pack_entry, pack_snap = _MSG.pack, _ENTRY.pack, _SNAP.pack
    m: Message | None = None
    try:
        for m in msgs:
            entries, snap, context = m.entries, m.snapshot, m.context
            append(
                pack_msg(
                    m.type,
                    m.to,
                    m.frm,
                    m.term,
                    m.log_term,
                    m.index,
                    m.commit,
                    m.reject,
                    m.reject_hint,
                    len(entries),
                    len(context),
                    snap is not None,
                )
            )
            if context:
                append(context)
            if entries:
                append(b"".join([pack_entry(e.index, e.term, e.kind, len(e.data)) for e in entries]))
                extend([e.data for e in entries])
            if snap is not None:
                meta = snap.meta
                voters, learners = meta.voters, meta.learners
                append(
                    pack_snap(
                        meta.index,
                        meta.term,
                        len(voters),
                        len(learners),
                        snap.offset,
                        snap.total,
                        len(snap.data),
                    )
                )
                if voters or learners:
                    append(struct.pack(f"<{len(voters) + len(learners)}Q", *voters, *learners))
                append(snap.data)
    except struct.error as exc:
        what = f"{m.type!r} to {m.to:x}" if m is not None else "message"
        raise CodecError(f"cannot encode raft {what}: a field is out of range ({exc})") from None
    return b"".join(parts)


def decode_messages(data: bytes) -> list[Message]:
    """Decode one frame made by :func:`encode_messages`; raise :class:`CodecError` on bad input."""
    if not isinstance(data, bytes):
        data = bytes(data)
    size = len(data)
    if size < _FRAME.size:
        raise CodecError(
            f"raft message frame is truncated: {size} bytes, the header alone needs {_FRAME.size}"
        )
    version, count = _FRAME.unpack_from(data, 0)
    if version != VERSION:
        raise CodecError(f"raft message frame has codec version {version}; this build speaks {VERSION}")
    off = _FRAME.size
    if count * _MSG.size > size - off:
        raise CodecError(f"raft message frame claims {count} messages but holds only {size - off} bytes")
    view = memoryview(data)
    out: list[Message] = []
    for n in range(count):
        msg, off = _decode_one(data, view, off, size, n, count)
        out.append(msg)
    if off != size:
        raise CodecError(f"raft message frame has {size - off} trailing bytes after its {count} messages")
    return out


def _decode_one(
    data: bytes, view: memoryview, off: int, size: int, n: int, count: int
) -> tuple[Message, int]:
    where = f"raft message {n + 1} of {count}"
    if off + _MSG.size > size:
        raise CodecError(f"{where} is truncated in its header")
    (mtype, to, frm, term, log_term, index, commit, reject, hint, n_entries, n_context, has_snap) = (
        _MSG.unpack_from(data, off)
    )
    off += _MSG.size
    msg_type = _MSG_TYPES.get(mtype)
    if msg_type is None:
        raise CodecError(f"{where} has unknown message type {mtype}")
    if reject > 1 or has_snap > 1:
        raise CodecError(f"{where} has a flag byte that is neither 0 nor 1")
    end = off + n_context
    if end > size:
        raise CodecError(f"{where} is truncated in its {n_context}-byte context")
    context = data[off:end]
    off = end
    entries: tuple[Entry, ...] = ()
    if n_entries:
        entries, off = _decode_entries(data, view, off, size, n_entries, where)
    snapshot = None
    if has_snap:
        snapshot, off = _decode_snapshot(data, off, size, where)
    msg = Message(
        msg_type, to, frm, term, log_term, index, entries, commit, reject == 1, hint, snapshot, context
    )
    return msg, off


def _decode_entries(
    data: bytes, view: memoryview, off: int, size: int, count: int, where: str
) -> tuple[tuple[Entry, ...], int]:
    table_end = off + count * _ENTRY.size
    if table_end > size:
        raise CodecError(f"{where} is truncated in its table of {count} entries")
    heads = _ENTRY.iter_unpack(view[off:table_end])
    off = table_end
    kinds = _KINDS
    out: list[Entry] = []
    append = out.append
    try:
        for index, term, kind, length in heads:
            end = off + length
            append(Entry(index, term, data[off:end], kinds[kind]))
            off = end
    except KeyError as exc:
        raise CodecError(f"{where} has an entry of unknown kind {exc.args[0]}") from None
    if off > size:
        raise CodecError(f"{where} is truncated in its entry data")
    return tuple(out), off


def _decode_snapshot(data: bytes, off: int, size: int, where: str) -> tuple[SnapshotChunk, int]:
    if off + _SNAP.size > size:
        raise CodecError(f"{where} is truncated in its snapshot header")
    index, term, n_voters, n_learners, offset, total, length = _SNAP.unpack_from(data, off)
    off += _SNAP.size
    n_ids = n_voters + n_learners
    end = off + n_ids * _U64 + length
    if end > size:
        raise CodecError(f"{where} is truncated in its snapshot membership or data")
    ids = struct.unpack_from(f"<{n_ids}Q", data, off) if n_ids else ()
    off += n_ids * _U64
    meta = SnapshotMeta(index, term, tuple(ids[:n_voters]), tuple(ids[n_voters:]))
    return SnapshotChunk(meta, offset, data[off:end], total), end
