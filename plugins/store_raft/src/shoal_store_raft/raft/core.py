"""Raft as a pure state machine, in the style of etcd's raft library.

The core never touches a disk, a socket or a clock. The driver calls ``tick()`` on a timer,
``step(message)`` for every message received, ``propose(data)`` for new entries, and then
drains ``ready()``: it persists what the Ready says, sends its messages, applies its committed
entries and calls ``advance(ready)``. Randomness (election timeouts) comes from an injected
``random.Random`` so a seeded simulation replays exactly.

Safety notes that shape the code:

* The leader counts its own copy of an entry towards a quorum only in ``advance``, i.e. after
  the driver made it durable; so nothing is ever acknowledged on the strength of an unsynced
  local write (etcd's async-storage rule).
* A leader commits by counting replicas only entries of its own term (Raft §5.4.2); it
  appends a NOOP entry when elected so earlier entries get committed through it.
* PreVote: a would-be candidate first asks whether it could win, without bumping its term, so
  a partitioned node that comes back does not depose a healthy leader.
* CheckQuorum: a leader that has not heard from a quorum within an election timeout steps
  down, and voters that hear from a live leader ignore vote requests (leader lease).
* Membership changes are one at a time (a CONF entry holds the whole new membership) and take
  effect when applied; a leader refuses a second change until the first is applied, and a new
  leader treats its whole log as possibly holding one (etcd's ``pendingConfIndex``), which
  closes the single-server-change bug found after the Raft paper.
* ReadIndex: a read is answered with the commit index once a quorum acknowledged a heartbeat
  sent after the request, and only after the leader committed an entry of its own term.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shoal_store_raft.raft.progress import Progress, ProgressState
from shoal_store_raft.raft.types import (
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NotLeader,
    ProposalDropped,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotChunk,
    SnapshotMeta,
    SoftState,
)

#: Why an election started and why a leader stepped down, as etcd's raft logs them: at scale an
#: election is the first sign of a member held too long, and without these lines the logs
#: only say who became leader, not who stopped hearing from whom.
log = logging.getLogger("shoal.store.raft")


@dataclass(frozen=True)
class Config:
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    #: Most entries in one AppendEntries; batching is what makes a Python Raft fast.
    max_entries_per_msg: int = 1024
    max_bytes_per_msg: int = 4 << 20
    max_inflight: int = 64
    #: Snapshots stream in chunks of this size, at most ``max_inflight`` chunks unacknowledged.
    snapshot_chunk_bytes: int = 1 << 20
    #: Refuse proposals once this many bytes are appended but uncommitted (0: no limit).
    max_uncommitted_bytes: int = 0
    #: Hand out committed entries for applying in slices of about this many bytes (at least one
    #: entry; 0: all at once), as etcd's MaxCommittedSizePerReady: the driver applies a slice
    #: per Ready and may let other work run between them instead of applying a backlog of
    #: thousands of changes in one go.
    max_committed_bytes_per_ready: int = 0

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("raft config: need 1 <= heartbeat_ticks < election_ticks")
        if self.max_inflight < 1 or self.snapshot_chunk_bytes < 1 or self.max_entries_per_msg < 1:
            raise ValueError(
                "raft config: max_inflight, snapshot_chunk_bytes, max_entries_per_msg must be >= 1"
            )


_VOTE_TYPES = (MsgType.VOTE, MsgType.PRE_VOTE)
#: Context of a vote forced by a leadership transfer: voters grant it despite their lease.
TRANSFER_CONTEXT = b"transfer"


@dataclass
class _ReadRequest:
    context: bytes
    index: int
    requester: int
    acks: set[int] = field(default_factory=set)


@dataclass
class _SnapshotReceive:
    meta: SnapshotMeta
    leader: int
    data: bytearray


class RaftCore:
    """One Raft member. See the module docstring for the driving contract."""

    def __init__(
        self,
        node_id: int,
        *,
        voters: Iterable[int],
        rng: random.Random,
        config: Config | None = None,
        hard_state: HardState | None = None,
        snapshot: SnapshotMeta | None = None,
        entries: Sequence[Entry] = (),
        applied: int | None = None,
        learners: Iterable[int] = (),
    ) -> None:
        if node_id <= 0:
            raise ValueError("raft node id must be a positive integer")
        self.id = node_id
        self.config = config or Config()
        self._rng = rng
        hs = hard_state or HardState()
        voters = tuple(sorted(set(voters)))
        learners = tuple(sorted(set(learners) - set(voters)))
        snap = snapshot or SnapshotMeta(0, 0, voters, learners)
        #: Membership as of the applied index. Empty for a member that joins an existing group:
        #: it learns the membership from the leader's log or snapshot.
        self.voters: tuple[int, ...] = voters
        self.learners: tuple[int, ...] = learners

        # --- log: entries[i] has index offset + 1 + i; offset/offset_term is the snapshot point.
        self._offset = snap.index
        self._offset_term = snap.term
        self._log: list[Entry] = [e for e in entries if e.index > snap.index]
        for pos, entry in enumerate(self._log):
            if entry.index != self._offset + 1 + pos:
                raise ValueError(f"raft log is not contiguous at index {entry.index}")
        self._stable = self.last_index()  # everything handed in at construction is durable
        self._snapshot: Snapshot | None = None  # latest local snapshot with data (for followers)
        self._pending_snapshot: Snapshot | None = None  # received from a leader, to install
        self._snap_recv: _SnapshotReceive | None = None  # chunks assembled so far

        self.term = hs.term
        self.vote = hs.vote
        self.commit = min(max(hs.commit, snap.index), self.last_index())
        self._applied = snap.index if applied is None else applied  # handed out for apply
        self._prev_hs = HardState(self.term, self.vote, self.commit)

        self.role = Role.FOLLOWER
        self.lead = 0
        self._prev_soft = SoftState(0, Role.FOLLOWER)
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self.config.election_ticks
        self._votes: dict[int, bool] = {}
        self._progress: dict[int, Progress] = {}
        self._msgs: list[Message] = []
        self._bcast_pending = False
        self.lead_transferee = 0
        self._pending_conf_index = 0
        self._uncommitted_bytes = 0
        self._reads: dict[bytes, _ReadRequest] = {}
        self._reads_waiting: list[tuple[bytes, int]] = []  # until an entry of this term commits
        self._read_states: list[ReadState] = []
        self._reset_randomized_timeout()

    # ------------------------------------------------------------------ log helpers

    def last_index(self) -> int:
        return self._offset + len(self._log)

    def last_term(self) -> int:
        return self._log[-1].term if self._log else self._offset_term

    def first_index(self) -> int:
        return self._offset + 1

    @property
    def applied(self) -> int:
        return self._applied

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or beyond the log."""
        if index == self._offset:
            return self._offset_term
        pos = index - self._offset - 1
        if 0 <= pos < len(self._log):
            return self._log[pos].term
        return None

    def entries_between(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index <= hi (both within the log)."""
        return self._log[lo - self._offset - 1 : hi - self._offset]

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    def _truncate_after(self, index: int) -> None:
        if index < self.commit:
            raise AssertionError(f"raft: refusing to truncate committed entries ({index} < {self.commit})")
        del self._log[index - self._offset :]
        self._stable = min(self._stable, index)

    # ------------------------------------------------------------------ state changes

    def _reset_randomized_timeout(self) -> None:
        et = self.config.election_ticks
        self._randomized_timeout = et + self._rng.randrange(et)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = 0
        self.lead = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {}
        self._progress = {}
        self._bcast_pending = False
        self.lead_transferee = 0
        self._uncommitted_bytes = 0
        self._reads = {}
        self._reads_waiting = []

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead

    def _become_pre_candidate(self) -> None:
        # Term and vote unchanged: a pre-vote round must not disturb anyone.
        self._votes = {}
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        self.lead = 0
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        nxt = self.last_index() + 1
        for peer in self.voters + self.learners:
            pr = Progress(nxt, self.config.max_inflight)
            pr.recent_active = True
            self._progress[peer] = pr
        self._progress[self.id].match = self._stable
        # Any entry of the log may be an unapplied membership change: no new one before all of
        # it is applied (etcd's pendingConfIndex).
        self._pending_conf_index = self.last_index()
        self._append([Entry(0, 0, b"", EntryKind.NOOP)])

    def _append(self, new: Sequence[Entry]) -> int:
        """Leader-side append at the current term; returns the last new index."""
        idx = self.last_index()
        term = self.term
        log = self._log
        for e in new:
            idx += 1
            log.append(Entry(idx, term, e.data, e.kind))
            self._uncommitted_bytes += len(e.data)
        self._bcast_pending = True
        return idx

    # ------------------------------------------------------------------ public API

    def is_leader(self) -> bool:
        return self.role == Role.LEADER

    def is_single_voter(self) -> bool:
        return self.voters == (self.id,)

    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self.id in self.voters and self._election_elapsed >= self._randomized_timeout:
            log.info(
                "raft: member %x heard from no leader for %d ticks at term %d: starting an election",
                self.id,
                self._election_elapsed,
                self.term,
            )
            self._election_elapsed = 0
            self.campaign()

    def campaign(self) -> None:
        """Start an election now (pre-vote first when enabled). No-op on a leader or non-voter."""
        self._campaign(transfer=False)

    def _campaign(self, *, transfer: bool) -> None:
        if self.role == Role.LEADER or self.id not in self.voters:
            return
        if self._pending_snapshot is not None:
            return  # still installing state; campaigning on a half-restored log is wrong
        if self._has_unapplied_conf():
            return  # our membership is about to change; we may not even be a voter
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
            self._run_election(MsgType.PRE_VOTE, b"")
        else:
            self._become_candidate()
            self._run_election(MsgType.VOTE, TRANSFER_CONTEXT if transfer else b"")

    def _has_unapplied_conf(self) -> bool:
        if self.commit <= self._applied:
            return False
        lo = max(self._applied + 1, self.first_index())
        return any(e.kind == EntryKind.CONF for e in self.entries_between(lo, self.commit))

    def _check_proposal(self, size: int) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee:x}")
        limit = self.config.max_uncommitted_bytes
        if limit and self._uncommitted_bytes and self._uncommitted_bytes + size > limit:
            raise ProposalDropped(
                f"too much uncommitted data ({self._uncommitted_bytes} bytes) on the leader"
            )

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry; returns its index.

        Raises ``NotLeader`` (the caller forwards to ``lead``) or ``ProposalDropped``.
        """
        self._check_proposal(len(data))
        return self._append([Entry(0, 0, data)])

    def propose_conf_change(self, change: ConfChangeType, node: int) -> int:
        """Propose one membership change; it takes effect when applied.

        Raises ``ProposalDropped`` while another change is unapplied or when the change is
        invalid (adding a voter twice, removing a stranger or the last voter).
        """
        data = encode_conf(self._changed_conf(change, node))
        self._check_proposal(len(data))
        if self._pending_conf_index > self._applied:
            raise ProposalDropped("a membership change is already in progress; retry once it is applied")
        index = self._append([Entry(0, 0, data, EntryKind.CONF)])
        self._pending_conf_index = index
        return index

    def _changed_conf(self, change: ConfChangeType, node: int) -> ConfState:
        voters, learners = set(self.voters), set(self.learners)
        if node <= 0:
            raise ProposalDropped(f"invalid raft member id {node}")
        if change == ConfChangeType.ADD_VOTER:
            if node in voters:
                raise ProposalDropped(f"{node:x} is already a voter")
            learners.discard(node)
            voters.add(node)
        elif change == ConfChangeType.ADD_LEARNER:
            if node in voters or node in learners:
                raise ProposalDropped(f"{node:x} is already a member")
            learners.add(node)
        else:
            if node not in voters and node not in learners:
                raise ProposalDropped(f"{node:x} is not a member")
            if voters == {node}:
                raise ProposalDropped("cannot remove the last voter")
            voters.discard(node)
            learners.discard(node)
        return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))

    def _apply_conf(self, conf: ConfState) -> None:
        """Adopt a membership when its CONF entry is applied."""
        self.voters, self.learners = conf.voters, conf.learners
        if self.role != Role.LEADER:
            return
        nxt = self.last_index() + 1
        members = set(conf.voters) | set(conf.learners)
        for peer in members:
            if peer not in self._progress:
                self._progress[peer] = Progress(nxt, self.config.max_inflight)
                self._progress[peer].recent_active = True  # a newcomer: give it a chance
                self._send_append(peer, send_empty=True)  # probe it now, not at the next heartbeat
        for peer in list(self._progress):
            if peer not in members:
                del self._progress[peer]
        if self.lead_transferee and self.lead_transferee not in conf.voters:
            self.lead_transferee = 0
        if self.id not in conf.voters:
            # Removed (or demoted): tell the others the commit index, then stand down so a
            # member of the new configuration takes over.
            for peer in self._progress:
                if peer != self.id:
                    self._send_append(peer, send_empty=True)
            self._become_follower(self.term, 0)
        elif self._maybe_commit():
            self._bcast_append()

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to ``target`` (on the leader, or forwarded by a follower)."""
        m = Message(MsgType.TRANSFER_LEADER, self.id, self.id, self.term, index=target)
        if self.role == Role.LEADER:
            self._step_leader(m)
        elif self.lead:
            m.to = self.lead
            self._send(m)

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; a ``ReadState`` with ``context`` comes out of ``ready``.

        Raises ``NotLeader(0)`` when no leader is known. The request may be lost (the driver
        times it out): it has no effect either way.
        """
        if self.role == Role.LEADER:
            self._leader_read(context, self.id)
        elif self.lead:
            self._send(Message(MsgType.READ_INDEX, self.lead, self.id, self.term, context=context))
        else:
            raise NotLeader(0)

    def report_unreachable(self, peer: int) -> None:
        """The transport could not deliver to ``peer``: stop pipelining to it, probe instead."""
        pr = self._progress.get(peer) if self.role == Role.LEADER else None
        if pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries up to ``snapshot.meta.index`` (already applied and durable)."""
        index = snapshot.meta.index
        if index < self._offset:
            return
        if index == self._offset:
            self._snapshot = snapshot  # e.g. the snapshot loaded at start, kept for followers
            return
        if index > self._applied or index > self._stable:
            raise ValueError(f"raft: cannot compact to {index}: not yet applied and durable")
        term = self.term_at(index)
        assert term is not None
        del self._log[: index - self._offset]
        self._offset = index
        self._offset_term = term
        self._snapshot = snapshot

    def step(self, m: Message) -> None:
        """Process one message addressed to this member."""
        if m.term > self.term:
            if (
                m.type in _VOTE_TYPES
                and self.config.check_quorum
                and self.lead != 0
                and self._election_elapsed < self.config.election_ticks
                and m.context != TRANSFER_CONTEXT
            ):
                return  # leader lease: we heard from a live leader recently
            if m.type == MsgType.PRE_VOTE or (m.type == MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-vote traffic never changes terms
            elif m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, 0)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                MsgType.APP,
                MsgType.HEARTBEAT,
            ):
                # Tell a stale leader about the newer term so it steps down; otherwise a node
                # that kept its term high through pre-vote could never rejoin.
                self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term))
            elif m.type == MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            return

        if m.type in _VOTE_TYPES:
            self._handle_vote_request(m)
            return
        if self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def take_heartbeat_responses(self, term: int) -> list[Message]:
        """Take out of the pending messages the heartbeat responses of ``term``, for the driver
        to send while the rest waits: a follower installing a leader's snapshot processes no
        Ready until the snapshot is durable and loaded (0.3-1.3 s at 100,000 tasks), and a
        leader that hears nothing from it meanwhile counts it inactive (CheckQuorum) and
        cannot confirm reads through it. A heartbeat response promises nothing about the
        log (the leader never advances a follower's match on it); ``term`` is the term the
        driver already made durable, so it does not announce a term a crash could forget.
        """
        taken = [m for m in self._msgs if m.type == MsgType.HEARTBEAT_RESP and m.term == term]
        if taken:
            self._msgs = [m for m in self._msgs if m.type != MsgType.HEARTBEAT_RESP or m.term != term]
        return taken

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._bcast_pending
            or self._read_states
            or self._stable < self.last_index()
            or self.commit > self._applied
            or self._pending_snapshot is not None
            or self._prev_hs != HardState(self.term, self.vote, self.commit)
            or self._prev_soft != SoftState(self.lead, self.role)
        )

    def ready(self) -> Ready:
        """Collect pending work. Call ``advance`` with the result once it is all done."""
        if self._bcast_pending:
            self._bcast_pending = False
            if self.role == Role.LEADER:
                for peer in self._progress:
                    if peer != self.id:
                        self._send_append(peer)
        rd = Ready()
        if self._pending_snapshot is not None:
            rd.snapshot = self._pending_snapshot
            rd.must_sync = True
        if self._stable < self.last_index():
            rd.entries = self._log[self._stable - self._offset :]
            rd.must_sync = True
        if self.commit > self._applied:
            rd.committed = self._committed_slice()
        hs = HardState(self.term, self.vote, self.commit)
        if hs != self._prev_hs:
            rd.hard_state = hs
            if hs.term != self._prev_hs.term or hs.vote != self._prev_hs.vote:
                rd.must_sync = True
        soft = SoftState(self.lead, self.role)
        if soft != self._prev_soft:
            rd.soft_state = soft
        rd.messages = self._msgs
        self._msgs = []
        rd.read_states = self._read_states
        self._read_states = []
        return rd

    def _committed_slice(self) -> list[Entry]:
        """The committed entries not yet handed out, up to ``max_committed_bytes_per_ready``."""
        entries = self.entries_between(self._applied + 1, self.commit)
        limit = self.config.max_committed_bytes_per_ready
        if limit:
            size = 0
            for count, entry in enumerate(entries):
                size += len(entry.data)
                if size > limit and count:
                    return entries[:count]
        return entries

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied everything in ``rd``."""
        if rd.snapshot is not None and self._pending_snapshot is rd.snapshot:
            self._pending_snapshot = None
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        for e in rd.committed:
            if e.index <= self._applied:
                continue  # a snapshot installed meanwhile already covers it
            self._applied = e.index
            if e.kind == EntryKind.CONF:
                self._apply_conf(decode_conf(e.data))
        if rd.entries:
            last = rd.entries[-1]
            # Only mark stable if the log still holds that very entry (not truncated since).
            if self.term_at(last.index) == last.term:
                self._stable = max(self._stable, last.index)
            if self.role == Role.LEADER:
                pr = self._progress.get(self.id)
                if pr is not None and pr.maybe_update(self._stable):
                    self._commit_and_announce()

    def status(self) -> dict[str, object]:
        return {
            "id": self.id,
            "term": self.term,
            "vote": self.vote,
            "role": self.role.name.lower(),
            "lead": self.lead,
            "commit": self.commit,
            "applied": self._applied,
            "first_index": self.first_index(),
            "last_index": self.last_index(),
            "voters": list(self.voters),
            "learners": list(self.learners),
            "transferee": self.lead_transferee,
        }

    def progress(self, peer: int) -> Progress | None:
        """The leader's view of ``peer`` (None on a non-leader): for tests and status."""
        return self._progress.get(peer)

    # ------------------------------------------------------------------ elections

    def _quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def _run_election(self, kind: MsgType, context: bytes) -> None:
        term = self.term + 1 if kind == MsgType.PRE_VOTE else self.term
        self._votes[self.id] = True
        if self._poll_result() is not None:
            return
        for peer in self.voters:
            if peer != self.id:
                self._send(
                    Message(
                        kind,
                        peer,
                        self.id,
                        term,
                        log_term=self.last_term(),
                        index=self.last_index(),
                        context=context,
                    )
                )

    def _poll_result(self) -> bool | None:
        """Act on the votes so far: True won (and acted), False lost, None undecided."""
        granted = sum(1 for v in self._votes.values() if v)
        rejected = len(self._votes) - granted
        if granted >= self._quorum():
            if self.role == Role.PRE_CANDIDATE:
                self._become_candidate()
                self._run_election(MsgType.VOTE, b"")
            else:
                self._become_leader()
            return True
        if rejected >= self._quorum():
            self._become_follower(self.term, 0)
            return False
        return None

    def _handle_vote_request(self, m: Message) -> None:
        resp = MsgType.VOTE_RESP if m.type == MsgType.VOTE else MsgType.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == 0 and self.lead == 0)
            or (m.type == MsgType.PRE_VOTE and m.term > self.term)
        )
        up_to_date = m.log_term > self.last_term() or (
            m.log_term == self.last_term() and m.index >= self.last_index()
        )
        if can_vote and up_to_date:
            # Answer with the request's term: a pre-vote grant must not look stale to the asker.
            self._send(Message(resp, m.frm, self.id, m.term))
            if m.type == MsgType.VOTE:
                self._election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, m.frm, self.id, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
            return
        expected = MsgType.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if m.type == expected and m.frm in self.voters:
            self._votes.setdefault(m.frm, not m.reject)
            self._poll_result()

    # ------------------------------------------------------------------ follower

    def _step_follower(self, m: Message) -> None:
        if m.type == MsgType.APP:
            self._election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif m.type == MsgType.HEARTBEAT:
            self._election_elapsed = 0
            self.lead = m.frm
            if m.commit > self.commit:
                self.commit = min(m.commit, self.last_index())
            # Echo what the leader had sent (m.index) next to what we hold, so it can tell
            # that appends were lost on the way and fall back to probing.
            resp = Message(
                MsgType.HEARTBEAT_RESP, m.frm, self.id, self.term, index=self.last_index(), context=m.context
            )
            resp.reject_hint = m.index
            if self._pending_snapshot is not None:
                # It holds the leader's snapshot whole and the driver is installing it: say so,
                # or the leader would send its last chunk again on every heartbeat meanwhile.
                resp.commit = self._pending_snapshot.meta.index
            self._send(resp)
        elif m.type == MsgType.SNAP:
            self._election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif m.type == MsgType.TIMEOUT_NOW:
            self._campaign(transfer=True)
        elif m.type == MsgType.TRANSFER_LEADER:
            if self.lead:
                self._send(Message(MsgType.TRANSFER_LEADER, self.lead, self.id, self.term, index=m.index))
        elif m.type == MsgType.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.context, m.index))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.commit:
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=self.commit))
            return
        if self.term_at(m.index) != m.log_term:
            hint = min(m.index, self.last_index())
            self._send(
                Message(
                    MsgType.APP_RESP, m.frm, self.id, self.term, index=m.index, reject=True, reject_hint=hint
                )
            )
            return
        last_new = m.index + len(m.entries)
        for pos, e in enumerate(m.entries):
            if e.index <= self._offset:
                continue
            t = self.term_at(e.index)
            if t != e.term:
                if t is not None:
                    self._truncate_after(e.index - 1)
                self._log.extend(m.entries[pos:])
                break
        if m.commit > self.commit:
            self.commit = min(m.commit, last_new)
        self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=last_new))

    def _handle_snapshot(self, m: Message) -> None:
        chunk = m.snapshot
        assert chunk is not None
        meta = chunk.meta
        if meta.index <= self.commit:
            self._snap_recv = None
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=self.commit))
            return
        if self.term_at(meta.index) == meta.term:
            # We already have the log up to there: just learn the commit.
            self._snap_recv = None
            self.commit = meta.index
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=meta.index))
            return
        recv = self._snap_recv
        if chunk.offset == 0:
            recv = self._snap_recv = _SnapshotReceive(meta, m.frm, bytearray())
        if recv is None or recv.meta != meta or recv.leader != m.frm or chunk.offset != len(recv.data):
            # Out of order, duplicate, or from an abandoned transfer: say where we are.
            have = len(recv.data) if recv is not None and recv.meta == meta else 0
            self._send(Message(MsgType.SNAP_RESP, m.frm, self.id, self.term, snapshot=_ack(meta, have)))
            return
        recv.data += chunk.data
        if len(recv.data) < chunk.total:
            self._send(
                Message(MsgType.SNAP_RESP, m.frm, self.id, self.term, snapshot=_ack(meta, len(recv.data)))
            )
            return
        # Complete: install atomically (the driver persists it before anything else).
        self._snap_recv = None
        snap = Snapshot(meta, bytes(recv.data))
        self._log = []
        self._offset = meta.index
        self._offset_term = meta.term
        self._stable = meta.index
        self.commit = meta.index
        self._applied = meta.index
        self.voters, self.learners = meta.voters, meta.learners
        self._snapshot = snap
        self._pending_snapshot = snap
        self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=meta.index))

    # ------------------------------------------------------------------ leader

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum:
                active = sum(
                    1
                    for p in self.voters
                    if p == self.id or (p in self._progress and self._progress[p].recent_active)
                )
                for p, pr in self._progress.items():
                    if p != self.id:
                        pr.recent_active = False
                if active < self._quorum():
                    log.warning(
                        "raft: leader %x steps down at term %d: heard from %d of %d voters in an "
                        "election timeout (%d ticks), a quorum is %d",
                        self.id,
                        self.term,
                        active,
                        len(self.voters),
                        self.config.election_ticks,
                        self._quorum(),
                    )
                    self._become_follower(self.term, 0)
                    return
            self.lead_transferee = 0  # a transfer that did not finish in an election timeout
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            context = next(reversed(self._reads)) if self._reads else b""
            self._bcast_heartbeat(context)

    def _bcast_heartbeat(self, context: bytes) -> None:
        for peer, pr in self._progress.items():
            if peer != self.id:
                self._send(
                    Message(
                        MsgType.HEARTBEAT,
                        peer,
                        self.id,
                        self.term,
                        index=pr.next - 1,
                        commit=min(pr.match, self.commit),
                        context=context,
                    )
                )

    def _bcast_append(self) -> None:
        for peer in self._progress:
            if peer != self.id:
                self._send_append(peer, send_empty=True)

    def _step_leader(self, m: Message) -> None:
        if m.type == MsgType.TRANSFER_LEADER:
            self._handle_transfer(m.index)
            return
        if m.type == MsgType.READ_INDEX:
            self._leader_read(m.context, m.frm)
            return
        pr = self._progress.get(m.frm)
        if pr is None:
            return
        if m.type == MsgType.APP_RESP:
            self._handle_append_resp(m, pr)
        elif m.type == MsgType.SNAP_RESP:
            pr.recent_active = True
            chunk = m.snapshot
            if pr.state == ProgressState.SNAPSHOT and chunk is not None and pr.snap is not None:
                if chunk.meta == pr.snap.meta:
                    if chunk.offset <= pr.snap_acked:
                        pr.snap_sent = chunk.offset  # it lost chunks (or restarted): go back
                    pr.snap_acked = chunk.offset
                    pr.snap_sent = max(pr.snap_sent, pr.snap_acked)
                    self._send_snapshot_chunks(m.frm, pr)
        elif m.type == MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE:
                if m.index < m.reject_hint:
                    pr.become_probe()  # appends sent before the heartbeat never arrived
                elif len(pr.inflight) >= pr.max_inflight:
                    pr.inflight.popleft()
            elif pr.state == ProgressState.SNAPSHOT:
                if pr.snap is not None and m.commit and m.commit == pr.snap.meta.index:
                    # It holds the whole snapshot and is installing it: its acknowledgement
                    # follows once the snapshot is durable and loaded; nothing to send.
                    if m.context:
                        self._ack_read(m.context, m.frm)
                    return
                pr.snap_sent = pr.snap_acked  # retransmit unacknowledged chunks
            elif m.index + 1 < pr.next:
                # Probing, and the follower's log ends before what we would probe: start
                # there (the probe or its rejection may have been lost).
                pr.next = max(pr.match + 1, m.index + 1)
            if pr.match < self.last_index() or pr.state == ProgressState.SNAPSHOT:
                # Even when empty: a probe is what finds where the logs match, and when
                # replicating, an empty append is answered with the follower's match (its
                # acknowledgement may have been lost, and no other message would repair that).
                self._send_append(m.frm, send_empty=True)
            if m.context:
                self._ack_read(m.context, m.frm)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            if pr.maybe_decr_to(m.index, m.reject_hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.paused()
        if (
            pr.state == ProgressState.SNAPSHOT
            and pr.snap is not None
            and m.index >= pr.snap.meta.index
            and m.index + 1 < self.first_index()
        ):
            # It holds the snapshot being sent, but the log was compacted past that since:
            # only the newer snapshot can bring it up to date.
            pr.maybe_update(m.index)
            self._start_snapshot(m.frm, pr)
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.free_le(m.index)
        self._commit_and_announce()
        if was_paused or pr.next <= self.last_index():
            self._send_append(m.frm)
        if m.frm == self.lead_transferee and pr.match == self.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, m.frm, self.id, self.term))

    def _handle_transfer(self, target: int) -> None:
        if target == self.id or target not in self.voters or target not in self._progress:
            return  # to self, to a stranger or to a learner: nothing to do
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self._election_elapsed = 0  # the transfer must finish within one election timeout
        if self._progress[target].match == self.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, target, self.id, self.term))
        else:
            self._send_append(target)

    def _commit_and_announce(self) -> None:
        """Advance the commit index. A new commit index is not worth a message of its own:
        followers learn it with the next append or heartbeat (Raft §5.3); under load that is the
        next proposal's append, and with one write at a time sending it at once would double
        the messages per commit. Except for a membership change: everyone must learn that at
        once (a leader that removed itself steps down after applying it, and a follower left
        not knowing the change committed would wait for the removed member's vote)."""
        before = self.commit
        if self._maybe_commit() and any(
            e.kind == EntryKind.CONF for e in self.entries_between(before + 1, self.commit)
        ):
            self._bcast_append()

    def _maybe_commit(self) -> bool:
        matches = sorted((self._progress[p].match for p in self.voters if p in self._progress), reverse=True)
        if not self.voters or len(matches) < self._quorum():
            return False
        idx = matches[self._quorum() - 1]
        if idx > self.commit and self.term_at(idx) == self.term:
            self._uncommitted_bytes -= sum(len(e.data) for e in self.entries_between(self.commit + 1, idx))
            self._uncommitted_bytes = max(self._uncommitted_bytes, 0)
            first_in_term = self.term_at(self.commit) != self.term
            self.commit = idx
            if first_in_term and self._reads_waiting:
                waiting, self._reads_waiting = self._reads_waiting, []
                for context, requester in waiting:
                    self._leader_read(context, requester)
            return True
        return False

    # ------------------------------------------------------------------ ReadIndex

    def _leader_read(self, context: bytes, requester: int) -> None:
        if self.term_at(self.commit) != self.term:
            self._reads_waiting.append((context, requester))  # an old commit index may be stale
            return
        if self._quorum() == 1 and self.id in self.voters:
            self._answer_read(context, self.commit, requester)
            return
        if context in self._reads:
            return  # a duplicate request: the first one will answer
        self._reads[context] = _ReadRequest(context, self.commit, requester, {self.id})
        self._bcast_heartbeat(context)

    def _ack_read(self, context: bytes, frm: int) -> None:
        req = self._reads.get(context)
        if req is None or frm not in self.voters:
            return
        req.acks.add(frm)
        if len(req.acks & set(self.voters)) < self._quorum():
            return
        # A quorum confirmed leadership after this request arrived, so also after every
        # earlier one: answer them all, in order.
        while self._reads:
            ctx = next(iter(self._reads))
            done = self._reads.pop(ctx)
            self._answer_read(done.context, done.index, done.requester)
            if ctx == context:
                break

    def _answer_read(self, context: bytes, index: int, requester: int) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(context, index))
        else:
            self._send(
                Message(MsgType.READ_INDEX_RESP, requester, self.id, self.term, index=index, context=context)
            )

    # ------------------------------------------------------------------ sending

    def _send_append(self, to: int, send_empty: bool = False) -> None:
        """Send what ``to`` lacks: one message when probing, a pipeline up to the window when
        replicating (so a burst of proposals is not throttled to one batch per round trip)."""
        pr = self._progress[to]
        self._send_one_append(to, send_empty)
        while pr.state == ProgressState.REPLICATE and not pr.paused() and pr.next <= self.last_index():
            self._send_one_append(to, False)

    def _send_one_append(self, to: int, send_empty: bool) -> None:
        pr = self._progress[to]
        if pr.state == ProgressState.SNAPSHOT:
            self._send_snapshot_chunks(to, pr)
            return
        if pr.paused():
            return
        prev = pr.next - 1
        prev_term = self.term_at(prev)
        if prev_term is None:
            self._start_snapshot(to, pr)
            return
        last = self.last_index()
        if pr.next > last and not send_empty:
            return
        hi = min(last, prev + self.config.max_entries_per_msg)
        ents = self.entries_between(pr.next, hi)
        size = 0
        for n, e in enumerate(ents):
            size += len(e.data)
            if size > self.config.max_bytes_per_msg and n > 0:
                ents = ents[:n]
                break
        self._send(
            Message(
                MsgType.APP,
                to,
                self.id,
                self.term,
                log_term=prev_term,
                index=prev,
                entries=tuple(ents),
                commit=self.commit,
            )
        )
        if not ents:
            return
        if pr.state == ProgressState.REPLICATE:
            pr.next = ents[-1].index + 1
            pr.inflight.append(ents[-1].index)
        else:
            pr.probe_sent = True

    def _start_snapshot(self, to: int, pr: Progress) -> None:
        snap = self._snapshot
        if snap is None or not pr.recent_active:
            return  # not to a follower that is not answering: it would be wasted work
        pr.become_snapshot(snap)
        self._send_snapshot_chunks(to, pr)

    def _send_snapshot_chunks(self, to: int, pr: Progress) -> None:
        snap = pr.snap
        assert snap is not None
        size = self.config.snapshot_chunk_bytes
        total = len(snap.data)
        window = self.config.max_inflight * size
        if total == 0 and pr.snap_sent == 0:
            self._send(
                Message(MsgType.SNAP, to, self.id, self.term, snapshot=SnapshotChunk(snap.meta, 0, b"", 0))
            )
            pr.snap_sent = 1  # "sent" until acknowledged or retransmitted
            return
        while pr.snap_sent < total and pr.snap_sent - pr.snap_acked < window:
            off = pr.snap_sent
            data = snap.data[off : off + size]
            self._send(
                Message(
                    MsgType.SNAP, to, self.id, self.term, snapshot=SnapshotChunk(snap.meta, off, data, total)
                )
            )
            pr.snap_sent = off + len(data)

    def _send(self, m: Message) -> None:
        self._msgs.append(m)


def _ack(meta: SnapshotMeta, offset: int) -> SnapshotChunk:
    return SnapshotChunk(meta, offset, b"", 0)


def encode_conf(conf: ConfState) -> bytes:
    """A CONF entry's data: the whole new membership (voters, then learners)."""
    voters, learners = sorted(set(conf.voters)), sorted(set(conf.learners))
    out = len(voters).to_bytes(4, "big") + b"".join(v.to_bytes(8, "big") for v in voters)
    return out + b"".join(v.to_bytes(8, "big") for v in learners)


def decode_conf(data: bytes) -> ConfState:
    n = int.from_bytes(data[:4], "big")
    ids = [int.from_bytes(data[i : i + 8], "big") for i in range(4, len(data), 8)]
    return ConfState(tuple(ids[:n]), tuple(ids[n:]))
