"""The Raft message wire codec: exact round trips, real cluster traffic, and hostile input."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal_store_raft.codec import VERSION, CodecError, decode_messages, encode_messages
from shoal_store_raft.raft import (
    TRANSFER_CONTEXT,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MsgType,
    RaftCore,
    SnapshotChunk,
    SnapshotMeta,
    encode_conf,
)
from shoal_store_raft.raft.testnet import Network

U64 = 2**64 - 1
META = SnapshotMeta(1200, 7, (0x1A, 0x2B, 0x3C), (0x4D, 0x5E))


def realistic(t: MsgType) -> Message:
    """One message of type ``t`` with the fields the core actually sets for it."""
    match t:
        case MsgType.VOTE | MsgType.PRE_VOTE:
            return Message(t, 2, 1, 8, log_term=7, index=1311, context=TRANSFER_CONTEXT)
        case MsgType.VOTE_RESP | MsgType.PRE_VOTE_RESP:
            return Message(t, 1, 2, 8, reject=True)
        case MsgType.APP:
            entries = (
                Entry(1312, 8, b"", EntryKind.NOOP),
                Entry(1313, 8, b"\x00payload\xff" * 40),
                Entry(1314, 8, encode_conf(ConfState((1, 2, 3), (4,))), EntryKind.CONF),
                Entry(1315, 8, b""),
            )
            return Message(t, 3, 1, 8, log_term=7, index=1311, entries=entries, commit=1310)
        case MsgType.APP_RESP:
            return Message(t, 1, 3, 8, index=1311, reject=True, reject_hint=1290)
        case MsgType.HEARTBEAT:
            return Message(t, 2, 1, 8, commit=1315, context=b"read-17")
        case MsgType.HEARTBEAT_RESP:
            return Message(t, 1, 2, 8, index=1315, context=b"read-17")
        case MsgType.SNAP:
            return Message(t, 4, 1, 8, snapshot=SnapshotChunk(META, 65536, bytes(range(256)) * 64, 200_000))
        case MsgType.SNAP_RESP:
            return Message(t, 1, 4, 8, snapshot=SnapshotChunk(META, 81920, b"", 0), reject=True)
        case MsgType.TIMEOUT_NOW:
            return Message(t, 2, 1, 8)
        case MsgType.TRANSFER_LEADER:
            return Message(t, 1, 3, 8, index=2)
        case MsgType.READ_INDEX:
            return Message(t, 1, 2, 8, context=b"\x01" * 16)
        case MsgType.READ_INDEX_RESP:
            return Message(t, 2, 1, 8, index=1315, context=b"\x01" * 16)
    raise AssertionError(f"no realistic message for {t!r}")


ALL = [realistic(t) for t in MsgType]


@pytest.mark.parametrize("t", list(MsgType), ids=lambda t: t.name)
def test_every_message_type_round_trips_alone(t: MsgType) -> None:
    msg = realistic(t)
    assert decode_messages(encode_messages([msg])) == [msg]


def test_a_batch_of_every_type_round_trips_in_order_with_exact_types() -> None:
    decoded = decode_messages(encode_messages(ALL))
    assert decoded == ALL
    for got in decoded:
        assert type(got.type) is MsgType and isinstance(got.reject, bool) and type(got.context) is bytes
        for e in got.entries:
            assert type(e.kind) is EntryKind and type(e.data) is bytes
    app = decoded[[m.type for m in decoded].index(MsgType.APP)]
    assert isinstance(app.entries, tuple) and app.entries[2].kind == EntryKind.CONF
    snap = decoded[[m.type for m in decoded].index(MsgType.SNAP)].snapshot
    assert snap is not None and snap.meta.voters == (0x1A, 0x2B, 0x3C) and snap.meta.learners == (0x4D, 0x5E)


def test_empty_batch_and_extreme_values_round_trip() -> None:
    assert decode_messages(encode_messages([])) == []
    big = Message(
        MsgType.APP,
        U64,
        U64,
        U64,
        log_term=U64,
        index=U64,
        entries=(Entry(U64, U64, b"x"),),
        commit=U64,
        reject_hint=U64,
        snapshot=SnapshotChunk(SnapshotMeta(U64, U64, (U64,), (U64,)), U64, b"", U64),
    )
    assert decode_messages(encode_messages([big])) == [big]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = encode_messages(ALL)
    assert decode_messages(bytearray(raw)) == ALL  # type: ignore[arg-type]
    assert decode_messages(memoryview(raw)) == ALL  # type: ignore[arg-type]


class WireNetwork(Network):
    """A test network whose every delivered message crossed the wire codec first."""

    def __init__(self, ids: list[int]) -> None:
        # Small chunks so a snapshot crosses as several SNAP/SNAP_RESP rounds.
        super().__init__(ids, config=Config(snapshot_chunk_bytes=16))
        self.seen: set[MsgType] = set()

    def deliver_one(self) -> bool:
        if self.queue:
            original = self.queue[0]
            (decoded,) = decode_messages(encode_messages([original]))
            assert decoded == original
            self.queue[0] = decoded
            self.seen.add(decoded.type)
        return super().deliver_one()


def test_a_real_cluster_runs_entirely_over_the_codec() -> None:
    """Elections, replication, a learner, snapshot catch-up, ReadIndex and a transfer, all decoded."""
    net = WireNetwork([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for n in range(30):
        net.nodes[1].propose(b"v%d" % n)
    net.stabilize()
    net.compact(1)
    net.heal()
    net.add(4, RaftCore(4, voters=(), rng=random.Random(4)))
    net.nodes[1].propose_conf_change(ConfChangeType.ADD_LEARNER, 4)
    for _ in range(5):
        net.tick_all(net.config.heartbeat_ticks)
        net.stabilize()
    assert net.nodes[3].commit == net.nodes[1].commit and net.nodes[4].learners == (4,)
    net.nodes[2].read_index(b"req-1")
    net.stabilize()
    assert [r.context for r in net.read_states[2]] == [b"req-1"]
    net.nodes[2].transfer_leadership(3)
    net.stabilize()
    assert net.leaders() == [3]
    assert {MsgType.APP, MsgType.APP_RESP, MsgType.SNAP, MsgType.SNAP_RESP, MsgType.VOTE} <= net.seen
    assert {
        MsgType.READ_INDEX,
        MsgType.READ_INDEX_RESP,
        MsgType.TRANSFER_LEADER,
        MsgType.TIMEOUT_NOW,
    } <= net.seen


# ------------------------------------------------------------------ property

ids = st.integers(0, U64)
small_bytes = st.binary(max_size=64)
entry = st.builds(Entry, ids, ids, small_bytes, st.sampled_from(list(EntryKind)))
meta = st.builds(
    SnapshotMeta,
    ids,
    ids,
    st.lists(ids, max_size=7).map(tuple),
    st.lists(ids, max_size=4).map(tuple),
)
chunk = st.builds(SnapshotChunk, meta, ids, small_bytes, ids)
message = st.builds(
    Message,
    st.sampled_from(list(MsgType)),
    ids,
    ids,
    ids,
    log_term=ids,
    index=ids,
    entries=st.lists(entry, max_size=6).map(tuple),
    commit=ids,
    reject=st.booleans(),
    reject_hint=ids,
    snapshot=st.none() | chunk,
    context=small_bytes,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(message, max_size=5))
def test_any_batch_of_messages_round_trips(msgs: list[Message]) -> None:
    assert decode_messages(encode_messages(msgs)) == msgs


@settings(max_examples=300, deadline=None)
@given(st.lists(message, min_size=1, max_size=3), st.data())
def test_every_truncation_raises_codec_error(msgs: list[Message], data: st.DataObject) -> None:
    raw = encode_messages(msgs)
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    with pytest.raises(CodecError):
        decode_messages(raw[:cut])


@settings(max_examples=500, deadline=None)
@given(st.lists(message, min_size=1, max_size=3), st.data())
def test_garbled_bytes_decode_or_raise_codec_error_only(msgs: list[Message], data: st.DataObject) -> None:
    """Flipped bytes may still form valid messages, but never escape as another exception."""
    raw = bytearray(encode_messages(msgs))
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] = data.draw(st.integers(0, 255).filter(lambda b, old=raw[at]: b != old), label="byte")
    try:
        decoded = decode_messages(bytes(raw))
    except CodecError:
        return
    assert all(isinstance(m, Message) for m in decoded)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_codec_error_only(raw: bytes) -> None:
    try:
        decode_messages(bytes([VERSION]) + raw)
    except CodecError:
        pass


# ------------------------------------------------------------------ named errors


def test_specific_bad_input_gets_a_clear_message() -> None:
    good = encode_messages([realistic(MsgType.APP)])
    cases = {
        b"": "truncated",
        bytes([VERSION + 1]) + good[1:]: "codec version 2",
        good + b"\0": "1 trailing bytes",
        good[:1] + struct.pack("<I", 10**9) + good[5:]: "claims 1000000000 messages",
        good[:5] + bytes([99]) + good[6:]: "unknown message type 99",
    }
    for raw, needle in cases.items():
        with pytest.raises(CodecError, match=needle):
            decode_messages(raw)


def test_a_forged_entry_kind_or_flag_is_refused() -> None:
    msg = Message(MsgType.APP, 2, 1, 3, entries=(Entry(1, 3, b"abc"),))
    raw = bytearray(encode_messages([msg]))
    kind_at = 5 + 1 + 6 * 8 + 1 + 8 + 4 + 4 + 1 + 16  # frame, message header, then entry index+term
    assert raw[kind_at] == EntryKind.NORMAL
    raw[kind_at] = 9
    with pytest.raises(CodecError, match="unknown kind 9"):
        decode_messages(bytes(raw))
    raw = bytearray(encode_messages([msg]))
    raw[5 + 1 + 6 * 8] = 2  # the reject flag
    with pytest.raises(CodecError, match="neither 0 nor 1"):
        decode_messages(bytes(raw))


def test_encoding_an_out_of_range_field_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="out of range"):
        encode_messages([Message(MsgType.APP, 2, 1, -1)])
    with pytest.raises(CodecError, match="out of range"):
        encode_messages([Message(MsgType.APP, 2, 1, 1, entries=(Entry(2**64, 1),))])
