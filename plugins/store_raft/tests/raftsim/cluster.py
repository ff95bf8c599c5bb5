"""A seeded discrete-event simulation of a Raft cluster driven through the pure core.

Everything runs in one thread on a virtual clock (ticks); one ``random.Random(seed)`` decides
every fault and every client action, so a seed replays exactly. The simulated world:

* a network that loses, duplicates, delays and reorders messages, and can be partitioned;
* disks with a write cache: a Ready's writes land in the cache and reach the durable copy
  only when the Ready says ``must_sync`` (the WAL's fsync); a crash throws the cache away;
* members that crash (losing everything volatile), restart from their durable state, join
  as learners and get promoted, get removed, and hand leadership over;
* clients that write and read (ReadIndex) three keys and record a history.

``Violation`` is raised by the invariant checks that run after every step; the history is
checked for linearizability at the end.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from shoal_store_raft.raft import (
    ConfChangeType,
    Config,
    Entry,
    EntryKind,
    HardState,
    Message,
    NotLeader,
    ProposalDropped,
    RaftCore,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

from raftsim.linearizability import INFINITY, Op, check_history

CoreFactory = Callable[..., RaftCore]


class Violation(AssertionError):
    """A safety invariant or the linearizability check failed."""


@dataclass
class Storage:
    snapshot: Snapshot
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)

    def copy(self) -> Storage:
        return Storage(self.snapshot, self.hard_state, list(self.entries))


class Disk:
    """The cache the process sees and the durable copy a crash falls back to."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.durable = Storage(snapshot)
        self.cache = self.durable.copy()

    def write(self, rd: Ready) -> None:
        st = self.cache
        if rd.snapshot is not None:
            st.snapshot = rd.snapshot
            st.entries = [e for e in st.entries if e.index > rd.snapshot.meta.index]
        if rd.entries:
            first = rd.entries[0].index
            st.entries = [e for e in st.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            st.hard_state = rd.hard_state

    def compact(self, snap: Snapshot) -> None:
        """A local snapshot is written and synced on its own (as snapfile.save does)."""
        for st in (self.cache, self.durable):
            if snap.meta.index > st.snapshot.meta.index:
                st.snapshot = snap
                st.entries = [e for e in st.entries if e.index > snap.meta.index]

    def sync(self) -> None:
        self.durable = self.cache.copy()

    def crash(self) -> None:
        self.cache = self.durable.copy()


@dataclass
class SimConfig:
    members: int = 3
    ticks: int = 150
    loss: float = 0.05
    dup: float = 0.03
    max_delay: int = 2
    p_crash: float = 0.015
    p_restart: float = 0.08
    p_partition: float = 0.02
    p_heal: float = 0.06
    p_conf: float = 0.02
    p_transfer: float = 0.015
    p_write: float = 0.35
    p_read: float = 0.25
    snapshot_interval: int = 6
    max_ops_per_key: int = 14
    op_timeout: int = 40
    #: driver bug for the checker self-test: send (ack) without ever fsyncing
    skip_sync: bool = False
    raft: Config = field(
        default_factory=lambda: Config(
            election_ticks=10,
            heartbeat_ticks=2,
            max_inflight=4,
            max_entries_per_msg=4,
            snapshot_chunk_bytes=24,
        )
    )


def entry_payload(op_id: int, key: str, value: int) -> bytes:
    return f"{op_id}|{key}|{value}".encode()


class Member:
    def __init__(self, node_id: int, disk: Disk) -> None:
        self.id = node_id
        self.disk = disk
        self.core: RaftCore | None = None
        self.kv: dict[str, int] = {}
        self.applied = 0
        self.last_commit = 0
        self.restarts = 0


@dataclass
class _PendingWrite:
    op: Op
    node: int
    index: int
    data: bytes
    deadline: int


@dataclass
class _PendingRead:
    op: Op
    node: int
    deadline: int
    index: int | None = None


class Simulation:
    def __init__(self, seed: int, cfg: SimConfig | None = None, core_factory: CoreFactory = RaftCore) -> None:
        self.seed = seed
        self.cfg = cfg or SimConfig()
        self.rng = random.Random(seed)
        self.core_factory = core_factory
        self.now = 0
        self.stamp = 0
        self.seq = 0
        self.log: list[str] = []
        ids = list(range(1, self.cfg.members + 1))
        self.next_id = len(ids) + 1
        boot = Snapshot(SnapshotMeta(0, 0, tuple(ids)), b"{}")
        self.members: dict[int, Member] = {i: Member(i, Disk(boot)) for i in ids}
        self.network: list[tuple[int, int, Message]] = []
        self.cut: set[frozenset[int]] = set()
        self.leader_of_term: dict[int, int] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data), known committed
        self.ops: list[Op] = []
        self.writes: list[_PendingWrite] = []
        self.reads: list[_PendingRead] = []
        self.ops_per_key: dict[str, int] = {}
        self.next_value = 1
        for i in ids:
            self._start(i)

    # ------------------------------------------------------------------ members

    def _start(self, node_id: int) -> None:
        m = self.members[node_id]
        st = m.disk.durable
        meta = st.snapshot.meta
        m.core = self.core_factory(
            node_id,
            voters=meta.voters,
            learners=meta.learners,
            rng=random.Random(self.rng.getrandbits(32)),
            config=self.cfg.raft,
            hard_state=st.hard_state,
            snapshot=meta,
            entries=st.entries,
        )
        m.core.compact(st.snapshot)
        m.kv = json.loads(st.snapshot.data)
        m.applied = meta.index
        if m.core.commit < st.hard_state.commit:
            raise Violation(f"member {node_id} restarted with commit {m.core.commit} below its durable one")
        m.last_commit = m.core.commit
        self._process(m)

    def crash(self, node_id: int) -> None:
        m = self.members[node_id]
        m.core = None
        m.disk.crash()
        m.kv, m.applied = {}, 0
        self._note(f"crash {node_id}")
        for w in self.writes:
            if w.node == node_id:
                self._finish(w.op, "unknown")
        for r in self.reads:
            if r.node == node_id:
                self._finish(r.op, "fail")
        self.writes = [w for w in self.writes if w.node != node_id]
        self.reads = [r for r in self.reads if r.node != node_id]

    def restart(self, node_id: int) -> None:
        self.members[node_id].restarts += 1
        self._note(f"restart {node_id}")
        self._start(node_id)

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.core is not None]

    def leaders(self) -> list[Member]:
        return [m for m in self.live() if m.core is not None and m.core.role == Role.LEADER]

    # ------------------------------------------------------------------ driver

    def _process(self, m: Member) -> None:
        core = m.core
        assert core is not None
        while core.has_ready():
            rd = core.ready()
            m.disk.write(rd)
            if rd.must_sync and not self.cfg.skip_sync:
                m.disk.sync()
            for msg in rd.messages:
                self._send(msg)
            if rd.snapshot is not None:
                m.kv = json.loads(rd.snapshot.data)
                m.applied = rd.snapshot.meta.index
                for w in self.writes:
                    if w.node == m.id and w.index <= m.applied:
                        self._finish(w.op, "unknown")
                self.writes = [w for w in self.writes if not (w.node == m.id and w.index <= m.applied)]
            for e in rd.committed:
                self._apply(m, e)
            core.advance(rd)
            if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
                self._on_leader(m)
            for rs in rd.read_states:
                for r in self.reads:
                    if r.node == m.id and r.index is None and rs.context == str(r.op.id).encode():
                        r.index = rs.index
            self._serve_reads(m)
            if m.applied - m.disk.cache.snapshot.meta.index >= self.cfg.snapshot_interval:
                self._snapshot(m)

    def _apply(self, m: Member, e: Entry) -> None:
        if e.index <= m.applied:
            return
        if e.index != m.applied + 1:
            raise Violation(f"member {m.id} applied index {e.index} after {m.applied}")
        m.applied = e.index
        seen = self.committed.setdefault(e.index, (e.term, e.data))
        if seen != (e.term, e.data):
            raise Violation(
                f"state machine safety: member {m.id} applied {e} at {e.index}, another applied {seen}"
            )
        if e.kind == EntryKind.NORMAL:
            _op_id, key, value = e.data.decode().split("|")
            m.kv[key] = int(value)
        for w in list(self.writes):
            if w.node == m.id and w.index == e.index:
                self.writes.remove(w)
                self._finish(w.op, "ok" if e.data == w.data else "fail")

    def _serve_reads(self, m: Member) -> None:
        for r in list(self.reads):
            if r.node == m.id and r.index is not None and m.applied >= r.index:
                self.reads.remove(r)
                r.op.value = m.kv.get(r.op.key)
                self._finish(r.op, "ok")

    def _snapshot(self, m: Member) -> None:
        core = m.core
        assert core is not None
        term = core.term_at(m.applied)
        if term is None or m.applied > core.last_index():
            return
        conf = core.conf_state()
        snap = Snapshot(SnapshotMeta(m.applied, term, conf.voters, conf.learners), json.dumps(m.kv).encode())
        if (
            m.applied > m.disk.durable.hard_state.commit
            and m.applied > len(m.disk.durable.entries) + m.disk.durable.snapshot.meta.index
        ):
            return  # not durable yet (only with the skip_sync bug)
        m.disk.compact(snap)
        core.compact(snap)

    def _send(self, msg: Message) -> None:
        self.seq += 1
        self.network.append((self.now + self.rng.randint(0, self.cfg.max_delay), self.seq, msg))

    def _deliver_due(self) -> None:
        for _round in range(50):
            due = [item for item in self.network if item[0] <= self.now]
            if not due:
                return
            self.network = [item for item in self.network if item[0] > self.now]
            self.rng.shuffle(due)  # reordering
            for _, _, msg in due:
                if frozenset((msg.frm, msg.to)) in self.cut or self.rng.random() < self.cfg.loss:
                    continue
                if self.rng.random() < self.cfg.dup:
                    self._send(msg)
                dst = self.members.get(msg.to)
                if dst is None or dst.core is None:
                    continue
                dst.core.step(msg)
                self._process(dst)
                self.check_step(dst)

    # ------------------------------------------------------------------ invariants

    def _on_leader(self, m: Member) -> None:
        core = m.core
        assert core is not None
        other = self.leader_of_term.setdefault(core.term, m.id)
        if other != m.id:
            raise Violation(f"two leaders in term {core.term}: {other} and {m.id}")
        # Leader completeness: every entry known committed is in the new leader's log.
        for index, (term, data) in self.committed.items():
            if index <= core.first_index() - 1:
                continue
            got = core.term_at(index)
            if got != term or core.entries_between(index, index)[0].data != data:
                raise Violation(
                    f"leader {m.id} of term {core.term} lacks committed entry {index} (term {term})"
                )

    def check_step(self, touched: Member | None = None) -> None:
        members = [touched] if touched is not None else self.live()
        for m in members:
            core = m.core
            if core is None:
                continue
            if core.commit < m.last_commit:
                raise Violation(
                    f"commit index of member {m.id} went back from {m.last_commit} to {core.commit}"
                )
            m.last_commit = core.commit
            lo = max(core.first_index(), max(self.committed, default=0) + 1)
            for e in core.entries_between(lo, core.commit):
                self.committed[e.index] = (e.term, e.data)

    def check_logs(self) -> None:
        """Log matching between every pair of live members, and committed prefixes agree."""
        live = [m.core for m in self.live() if m.core is not None]
        for core in live:
            for e in core.entries_between(core.first_index(), core.commit):
                if self.committed.get(e.index, (e.term, e.data)) != (e.term, e.data):
                    raise Violation(
                        f"member {core.id} committed {e} but {self.committed[e.index]} was committed"
                    )
        for i, a in enumerate(live):
            for b in live[i + 1 :]:
                lo = max(a.first_index(), b.first_index())
                hi = min(a.last_index(), b.last_index())
                top = 0
                for idx in range(hi, lo - 1, -1):
                    if a.term_at(idx) == b.term_at(idx):
                        top = idx
                        break
                if top and a.entries_between(lo, top) != b.entries_between(lo, top):
                    raise Violation(
                        f"log matching: members {a.id} and {b.id} agree on {top} but differ before"
                    )

    # ------------------------------------------------------------------ clients

    def _finish(self, op: Op, status: str) -> None:
        self.stamp += 1
        op.status = status
        if status == "fail":
            self.ops_per_key[op.key] -= 1  # left out of the check: does not cost search time
        if status == "ok":
            op.complete = self.stamp
        elif status == "unknown":
            op.complete = INFINITY

    def _invoke(self, kind: str) -> None:
        keys = [k for k in "abc" if self.ops_per_key.get(k, 0) < self.cfg.max_ops_per_key]
        live = self.live()
        if not keys or not live:
            return
        key = self.rng.choice(keys)
        self.ops_per_key[key] = self.ops_per_key.get(key, 0) + 1
        leaders = self.leaders()
        # Clients mostly find the leader (the kernel forwards to it); some ask anyone.
        m = leaders[-1] if leaders and self.rng.random() < 0.8 else self.rng.choice(live)
        core = m.core
        assert core is not None
        self.stamp += 1
        op = Op(len(self.ops) + 1, kind, key, None, self.stamp)
        self.ops.append(op)
        if kind == "w":
            op.value = self.next_value
            self.next_value += 1
            data = entry_payload(op.id, key, op.value)
            try:
                index = core.propose(data)
            except (NotLeader, ProposalDropped):
                self._finish(op, "fail")
                return
            self.writes.append(_PendingWrite(op, m.id, index, data, self.now + self.cfg.op_timeout))
        else:
            try:
                core.read_index(str(op.id).encode())
            except NotLeader:
                self._finish(op, "fail")
                return
            self.reads.append(_PendingRead(op, m.id, self.now + self.cfg.op_timeout))
        self._process(m)

    def _expire(self) -> None:
        for w in [w for w in self.writes if w.deadline <= self.now]:
            self.writes.remove(w)
            self._finish(w.op, "unknown")
        for r in [r for r in self.reads if r.deadline <= self.now]:
            self.reads.remove(r)
            self._finish(r.op, "fail")

    # ------------------------------------------------------------------ faults

    def _note(self, what: str) -> None:
        self.log.append(f"t={self.now} {what}")

    def _fault(self) -> None:
        rng, cfg = self.rng, self.cfg
        live = self.live()
        down = [m for m in self.members.values() if m.core is None]
        r = rng.random()
        if r < cfg.p_crash and live:
            self.crash(rng.choice(live).id)
        elif r < cfg.p_crash + cfg.p_restart and down:
            self.restart(rng.choice(down).id)
        r = rng.random()
        if r < cfg.p_partition:
            ids = list(self.members)
            rng.shuffle(ids)
            side = set(ids[: rng.randint(1, len(ids) // 2)])
            self.cut = {frozenset((a, b)) for a in side for b in self.members if b not in side}
            self._note(f"partition {sorted(side)}")
        elif r < cfg.p_partition + cfg.p_heal and self.cut:
            self.cut = set()
            self._note("heal")
        if rng.random() < cfg.p_conf:
            self._conf_change()
        if rng.random() < cfg.p_transfer:
            leaders = self.leaders()
            if leaders:
                core = leaders[0].core
                assert core is not None
                target = rng.choice(core.voters)
                self._note(f"transfer {core.id} -> {target}")
                core.transfer_leadership(target)
                self._process(leaders[0])

    def _conf_change(self) -> None:
        leaders = self.leaders()
        if not leaders:
            return
        m = leaders[0]
        core = m.core
        assert core is not None
        ready_learners = [
            p for p in core.learners if (pr := core.progress(p)) is not None and pr.match >= core.commit
        ]
        try:
            if ready_learners:
                change, node = ConfChangeType.ADD_VOTER, ready_learners[0]
            elif len(core.voters) > 2 and self.rng.random() < 0.5:
                change, node = ConfChangeType.REMOVE, self.rng.choice(core.voters)
            elif self.next_id <= self.cfg.members + 3 and not core.learners:
                change, node = ConfChangeType.ADD_LEARNER, self.next_id
            else:
                return
            core.propose_conf_change(change, node)
        except ProposalDropped:
            return
        self._note(f"conf {change.name} {node} via {m.id}")
        if change == ConfChangeType.ADD_LEARNER:
            self.next_id += 1
            self.members[node] = Member(node, Disk(Snapshot(SnapshotMeta(0, 0, ()), b"{}")))
            self._start(node)
        self._process(m)

    # ------------------------------------------------------------------ run

    def step(self) -> None:
        self.now += 1
        self._fault()
        if self.rng.random() < self.cfg.p_write:
            self._invoke("w")
        if self.rng.random() < self.cfg.p_read:
            self._invoke("r")
        for m in self.live():
            assert m.core is not None
            m.core.tick()
            self._process(m)
        self._deliver_due()
        self._expire()
        self.check_step()
        self.check_logs()

    def run(self) -> None:
        for _ in range(self.cfg.ticks):
            self.step()
        # Heal everything and let the cluster settle, so pending operations resolve.
        self.cut = set()
        for m in list(self.members.values()):
            if m.core is None:
                self.restart(m.id)
        for _ in range(3 * self.cfg.raft.election_ticks):
            self.step_quiet()
        for w in self.writes:
            self._finish(w.op, "unknown")
        for r in self.reads:
            self._finish(r.op, "fail")
        ok, why = check_history(self.ops)
        if not ok:
            raise Violation(why)

    def step_quiet(self) -> None:
        self.now += 1
        for m in self.live():
            assert m.core is not None
            m.core.tick()
            self._process(m)
        self._deliver_due()
        self._expire()
        self.check_step()
        self.check_logs()


def run_seed(seed: int, cfg: SimConfig | None = None, core_factory: CoreFactory = RaftCore) -> Simulation:
    """Run one seed; 3 members for even seeds, 5 for odd ones (so one number reproduces it)."""
    if cfg is None:
        cfg = SimConfig(members=3 if seed % 2 == 0 else 5)
    sim = Simulation(seed, cfg, core_factory)
    sim.run()
    return sim
