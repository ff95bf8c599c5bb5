"""What a leader knows about each follower's log: match/next indexes and flow control.

Kept apart from the core because it is pure bookkeeping with its own small state machine
(probe -> replicate, snapshot), mirroring etcd's ``tracker.Progress``.
"""

from __future__ import annotations

import enum
from collections import deque

from shoal_store_raft.raft.types import Snapshot


class ProgressState(enum.IntEnum):
    #: We do not know where the follower's log matches; send one AppendEntries per heartbeat.
    PROBE = 0
    #: The follower is in sync; pipeline AppendEntries up to the in-flight window.
    REPLICATE = 1
    #: The follower needs the snapshot; pause appends until it acknowledges it.
    SNAPSHOT = 2


class Progress:
    __slots__ = (
        "inflight",
        "match",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snap",
        "snap_acked",
        "snap_sent",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        self.pending_snapshot = 0
        self.max_inflight = max_inflight
        #: last index of each AppendEntries in flight (REPLICATE only), oldest first.
        self.inflight: deque[int] = deque()
        #: the snapshot being streamed (SNAPSHOT only): bytes acknowledged / sent so far.
        self.snap: Snapshot | None = None
        self.snap_acked = 0
        self.snap_sent = 0

    def paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snap = None
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snap = None
        self.inflight.clear()

    def become_snapshot(self, snap: Snapshot) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snap.meta.index
        self.snap = snap
        self.snap_acked = self.snap_sent = 0
        self.probe_sent = False
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """Record an acknowledgement up to ``index``; False if it says nothing new (stale)."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, hint: int) -> bool:
        """Handle a rejection of the append at ``rejected``; False if the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def free_le(self, index: int) -> None:
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
