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
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shoal_store_raft.raft.progress import Progress, ProgressState
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

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("raft config: need 1 <= heartbeat_ticks < election_ticks")


_VOTE_TYPES = (MsgType.VOTE, MsgType.PRE_VOTE)


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
    ) -> None:
        if node_id <= 0:
            raise ValueError("raft node id must be a positive integer")
        self.id = node_id
        self.config = config or Config()
        self._rng = rng
        hs = hard_state or HardState()
        snap = snapshot or SnapshotMeta(0, 0, tuple(voters))
        self.voters: tuple[int, ...] = tuple(sorted(set(voters)))
        if not self.voters:
            raise ValueError("raft needs at least one voter")

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
        self._reset_randomized_timeout()

    # ------------------------------------------------------------------ log helpers

    def last_index(self) -> int:
        return self._offset + len(self._log)

    def last_term(self) -> int:
        return self._log[-1].term if self._log else self._offset_term

    def first_index(self) -> int:
        return self._offset + 1

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
        for peer in self.voters:
            pr = Progress(nxt, self.config.max_inflight)
            pr.recent_active = True
            self._progress[peer] = pr
        self._progress[self.id].match = self._stable
        self._append([Entry(0, 0, b"", EntryKind.NOOP)])

    def _append(self, new: Sequence[Entry]) -> int:
        """Leader-side append at the current term; returns the last new index."""
        idx = self.last_index()
        term = self.term
        log = self._log
        for e in new:
            idx += 1
            log.append(Entry(idx, term, e.data, e.kind))
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
            self._election_elapsed = 0
            self.campaign()

    def campaign(self) -> None:
        """Start an election now (pre-vote first when enabled). No-op on a leader or non-voter."""
        if self.role == Role.LEADER or self.id not in self.voters:
            return
        if self._pending_snapshot is not None:
            return  # still installing state; campaigning on a half-restored log is wrong
        if self.config.pre_vote:
            self._become_pre_candidate()
            self._run_election(MsgType.PRE_VOTE)
        else:
            self._become_candidate()
            self._run_election(MsgType.VOTE)

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry; returns its index. Raises ``NotLeader``."""
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        idx = self.last_index() + 1
        self._log.append(Entry(idx, self.term, data))
        self._bcast_pending = True
        return idx

    def propose_conf(self, voters: Sequence[int]) -> int:
        """Append a membership entry (one change at a time is the caller's rule for now)."""
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        return self._append([Entry(0, 0, encode_voters(voters), EntryKind.CONF)])

    def apply_conf(self, voters: Sequence[int]) -> None:
        """Adopt a committed membership (called by the driver when it applies a CONF entry)."""
        self.voters = tuple(sorted(set(voters)))
        if self.role == Role.LEADER:
            nxt = self.last_index() + 1
            for peer in self.voters:
                if peer not in self._progress:
                    self._progress[peer] = Progress(nxt, self.config.max_inflight)
            for peer in list(self._progress):
                if peer not in self.voters:
                    del self._progress[peer]
            if self.id not in self.voters:
                self._become_follower(self.term, 0)
            else:
                self._maybe_commit()

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
                and (self._election_elapsed < self.config.election_ticks)
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

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._bcast_pending
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
            rd.committed = self.entries_between(self._applied + 1, self.commit)
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
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied everything in ``rd``."""
        if rd.snapshot is not None and self._pending_snapshot is rd.snapshot:
            self._pending_snapshot = None
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.committed:
            self._applied = max(self._applied, rd.committed[-1].index)
        if rd.entries:
            last = rd.entries[-1]
            # Only mark stable if the log still holds that very entry (not truncated since).
            if self.term_at(last.index) == last.term:
                self._stable = max(self._stable, last.index)
            if self.role == Role.LEADER:
                pr = self._progress.get(self.id)
                if pr is not None and pr.maybe_update(self._stable):
                    self._maybe_commit()

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
        }

    # ------------------------------------------------------------------ elections

    def _quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def _run_election(self, kind: MsgType) -> None:
        term = self.term + 1 if kind == MsgType.PRE_VOTE else self.term
        self._votes[self.id] = True
        if self._poll_result() is not None:
            return
        for peer in self.voters:
            if peer != self.id:
                self._send(
                    Message(kind, peer, self.id, term, log_term=self.last_term(), index=self.last_index())
                )

    def _poll_result(self) -> bool | None:
        """Act on the votes so far: True won (and acted), False lost, None undecided."""
        granted = sum(1 for v in self._votes.values() if v)
        rejected = len(self._votes) - granted
        if granted >= self._quorum():
            if self.role == Role.PRE_CANDIDATE:
                self._become_candidate()
                self._run_election(MsgType.VOTE)
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
            resp = Message(MsgType.HEARTBEAT_RESP, m.frm, self.id, self.term, index=self.last_index())
            resp.reject_hint = m.index
            self._send(resp)
        elif m.type == MsgType.SNAP:
            self._election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)

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
        snap = m.snapshot
        assert snap is not None
        meta = snap.meta
        if meta.index <= self.commit:
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=self.commit))
            return
        if self.term_at(meta.index) == meta.term:
            # We already have the log up to there: just learn the commit.
            self.commit = meta.index
        else:
            self._log = []
            self._offset = meta.index
            self._offset_term = meta.term
            self._stable = meta.index
            self.commit = meta.index
            self._applied = meta.index
            self.voters = meta.voters
            self._snapshot = snap
            self._pending_snapshot = snap
        self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=self.last_index()))

    # ------------------------------------------------------------------ leader

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum:
                active = sum(1 for p, pr in self._progress.items() if p == self.id or pr.recent_active)
                for p, pr in self._progress.items():
                    if p != self.id:
                        pr.recent_active = False
                if active < self._quorum():
                    self._become_follower(self.term, 0)
                    return
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
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
                        )
                    )

    def _step_leader(self, m: Message) -> None:
        pr = self._progress.get(m.frm)
        if pr is None:
            return
        if m.type == MsgType.APP_RESP:
            pr.recent_active = True
            if m.reject:
                if pr.maybe_decr_to(m.index, m.reject_hint):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self._send_append(m.frm)
                return
            was_paused = pr.paused()
            if not pr.maybe_update(m.index):
                return
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                pr.become_probe()
                pr.become_replicate()
            elif pr.state == ProgressState.REPLICATE:
                pr.free_le(m.index)
            if self._maybe_commit():
                for peer in self._progress:
                    if peer != self.id:
                        self._send_append(peer, send_empty=True)
            elif was_paused or pr.next <= self.last_index():
                self._send_append(m.frm)
        elif m.type == MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE:
                if m.index < m.reject_hint:
                    pr.become_probe()  # appends sent before the heartbeat never arrived
                elif len(pr.inflight) >= pr.max_inflight:
                    pr.inflight.popleft()
            if pr.match < self.last_index():
                self._send_append(m.frm)

    def _maybe_commit(self) -> bool:
        matches = sorted((self._progress[p].match for p in self.voters if p in self._progress), reverse=True)
        if len(matches) < self._quorum():
            return False
        idx = matches[self._quorum() - 1]
        if idx > self.commit and self.term_at(idx) == self.term:
            self.commit = idx
            return True
        return False

    def _send_append(self, to: int, send_empty: bool = False) -> None:
        pr = self._progress[to]
        if pr.paused():
            return
        prev = pr.next - 1
        prev_term = self.term_at(prev)
        if prev_term is None or (prev < self._offset):
            self._send_snapshot(to, pr)
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

    def _send_snapshot(self, to: int, pr: Progress) -> None:
        snap = self._snapshot
        if snap is None or not pr.recent_active:
            return
        pr.become_snapshot(snap.meta.index)
        self._send(Message(MsgType.SNAP, to, self.id, self.term, snapshot=snap))

    def _send(self, m: Message) -> None:
        self._msgs.append(m)


def encode_voters(voters: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(8, "big") for v in sorted(set(voters)))


def decode_voters(data: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(data[i : i + 8], "big") for i in range(0, len(data), 8))
