"""Raft consensus as a pure, deterministic state machine (no I/O, no clock)."""

from shoal_store_raft.raft.core import Config, RaftCore, decode_voters, encode_voters
from shoal_store_raft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NotLeader,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "Message",
    "MsgType",
    "NotLeader",
    "RaftCore",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "decode_voters",
    "encode_voters",
]
