"""The values the Raft core exchanges with its driver: entries, messages, hard state, Ready.

They are plain slotted dataclasses so the core stays free of any wire format; the WAL and the
transport encode them with ``struct`` where they cross a boundary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EntryKind(enum.IntEnum):
    """What an entry carries. Only NORMAL entries reach the state machine."""

    NORMAL = 0
    #: Written by a new leader to commit entries of earlier terms (Raft §5.4.2); empty data.
    NOOP = 1
    #: A membership change (voter IDs); applied by the driver, never by the state machine.
    CONF = 2


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class MsgType(enum.IntEnum):
    VOTE = 1
    VOTE_RESP = 2
    PRE_VOTE = 3
    PRE_VOTE_RESP = 4
    APP = 5
    APP_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    #: One chunk of a snapshot (``snapshot`` holds it); a large state is never one message.
    SNAP = 9
    #: Follower -> leader: how many snapshot bytes it holds in order (``snapshot.offset``).
    SNAP_RESP = 10
    #: Leader -> transfer target: campaign now, skipping pre-vote and leases.
    TIMEOUT_NOW = 11
    #: Ask the leader to hand leadership to member ``index`` (forwarded by followers).
    TRANSFER_LEADER = 12
    #: Follower -> leader: a ReadIndex request (``context`` identifies it).
    READ_INDEX = 13
    #: Leader -> follower: the read index (``index``) for ``context``, leadership confirmed.
    READ_INDEX_RESP = 14


class ConfChangeType(enum.IntEnum):
    """One membership change at a time (Raft thesis §4.1), as etcd's ConfChange v1."""

    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE = 2


@dataclass(slots=True, frozen=True)
class Entry:
    index: int
    term: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL


@dataclass(slots=True, frozen=True)
class HardState:
    """What must survive a crash for safety: the term, the vote in it, and the commit index."""

    term: int = 0
    vote: int = 0
    commit: int = 0


@dataclass(slots=True, frozen=True)
class ConfState:
    """A whole membership: who votes, and who only receives the log (learners)."""

    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    """Where a snapshot sits in the log and the membership at that point."""

    index: int
    term: int
    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()


@dataclass(slots=True, frozen=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes


@dataclass(slots=True, frozen=True)
class SnapshotChunk:
    """``data`` is bytes ``offset .. offset+len(data)`` of a snapshot ``total`` bytes long.

    Chunks let a large state cross the network as a bounded window of small messages; the
    receiver assembles them in order and installs the snapshot only once it is complete.
    """

    meta: SnapshotMeta
    offset: int
    data: bytes
    total: int

    @property
    def last(self) -> bool:
        return self.offset + len(self.data) >= self.total


@dataclass(slots=True, frozen=True)
class ReadState:
    """A confirmed ReadIndex: serve the read once the local applied index reaches ``index``."""

    context: bytes
    index: int


@dataclass(slots=True)
class Message:
    """One Raft RPC or response.

    ``index``/``log_term`` are prevLogIndex/prevLogTerm for APP, lastLogIndex/lastLogTerm for
    votes, and the acknowledged (or rejected) index for APP_RESP. ``reject_hint`` is the
    follower's last index on a rejection so the leader can skip back in one round trip.
    ``context`` carries a ReadIndex request ID (READ_INDEX*, HEARTBEAT*) or marks a vote
    forced by a leadership transfer. ``commit`` on a HEARTBEAT_RESP is the index of the
    leader's snapshot the follower holds whole and is installing (0: none).
    """

    type: MsgType
    to: int
    frm: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: SnapshotChunk | None = None
    context: bytes = b""


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile facts the driver reacts to (leadership), reported only when they change."""

    lead: int
    role: Role


@dataclass(slots=True)
class Ready:
    """Everything the driver must do, in this order.

    1. persist ``snapshot`` (if any), ``entries`` and ``hard_state`` (fsync when ``must_sync``);
    2. send ``messages`` (only after 1: they may promise what was just persisted);
    3. apply ``committed`` in order (the core adopts CONF entries itself in ``advance``);
       serve ``read_states`` once the applied index reaches theirs;
    4. call ``advance(ready)``.
    """

    entries: list[Entry] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    soft_state: SoftState | None = None
    must_sync: bool = False
    read_states: list[ReadState] = field(default_factory=list)


class NotLeader(Exception):
    """``propose`` on a member that is not the leader; ``lead`` is the known leader (0 = none)."""

    def __init__(self, lead: int) -> None:
        super().__init__(f"not the leader (leader: {lead:x})" if lead else "not the leader (no leader)")
        self.lead = lead


class ProposalDropped(Exception):
    """The leader refused a proposal: a transfer is in progress, a membership change is
    pending, or the uncommitted-entries limit is reached. Nothing was appended."""
