"""A synchronous in-process network of Raft cores, for tests and simulation (no I/O, no timers).

Modelled on the ``network`` helper of etcd's raft tests: messages go into one FIFO queue and
are delivered by ``deliver``/``stabilize``; links can be cut, nodes isolated, and message types
ignored. Every core persists "instantly" (its Ready is processed synchronously), and each
node's applied entries are recorded so tests can check that replicas agree.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

from shoal_store_raft.raft.core import Config, RaftCore
from shoal_store_raft.raft.types import (
    Entry,
    EntryKind,
    Message,
    MsgType,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
)


class Network:
    def __init__(self, ids: Iterable[int], *, seed: int = 0, config: Config | None = None) -> None:
        self.ids = tuple(ids)
        self.config = config or Config()
        self.rng = random.Random(seed)
        self.nodes: dict[int, RaftCore] = {
            i: RaftCore(i, voters=self.ids, rng=random.Random(seed * 1000 + i), config=self.config)
            for i in self.ids
        }
        #: what each node applied, as (index, term, data) for NORMAL entries
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        #: ReadIndex answers each node got, in order
        self.read_states: dict[int, list[ReadState]] = {i: [] for i in self.ids}
        self.queue: deque[Message] = deque()
        self.cut: set[frozenset[int]] = set()
        self.ignored: set[MsgType] = set()
        self.drop_rate = 0.0
        #: (term, leader id) every time any node became leader
        self.leader_history: list[tuple[int, int]] = []

    # --------------------------------------------------------------- faults

    def isolate(self, node: int) -> None:
        for other in self.ids:
            if other != node:
                self.cut.add(frozenset((node, other)))

    def heal(self) -> None:
        self.cut.clear()
        self.ignored.clear()
        self.drop_rate = 0.0

    # --------------------------------------------------------------- driving

    def process(self, node: int) -> None:
        core = self.nodes[node]
        while core.has_ready():
            rd = core.ready()
            if rd.snapshot is not None:
                self.applied[node] = [Entry(rd.snapshot.meta.index, rd.snapshot.meta.term, rd.snapshot.data)]
            self.queue.extend(rd.messages)
            for e in rd.committed:
                if e.kind == EntryKind.NORMAL:
                    self.applied[node].append(e)
            self.read_states.setdefault(node, []).extend(rd.read_states)
            core.advance(rd)
            if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
                self.leader_history.append((core.term, node))

    def process_all(self) -> None:
        for node in self.ids:
            self.process(node)

    def add(self, node: int, core: RaftCore) -> None:
        """Bring a new member (e.g. one about to be added by a membership change) online."""
        self.ids = (*self.ids, node)
        self.nodes[node] = core
        self.applied[node] = []
        self.read_states[node] = []

    def deliver_one(self) -> bool:
        if not self.queue:
            return False
        m = self.queue.popleft()
        if frozenset((m.frm, m.to)) in self.cut or m.type in self.ignored:
            return True
        if self.drop_rate and self.rng.random() < self.drop_rate:
            return True
        if m.to not in self.nodes:
            return True  # a member that is gone (or not started yet)
        self.nodes[m.to].step(m)
        self.process(m.to)
        return True

    def stabilize(self, max_steps: int = 100_000) -> None:
        """Process and deliver until nothing is left to do."""
        self.process_all()
        steps = 0
        while self.deliver_one():
            steps += 1
            if steps > max_steps:
                raise AssertionError("raft network did not stabilize")
        self.process_all()

    def tick(self, node: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[node].tick()
            self.process(node)

    def heartbeat(self, leader: int) -> None:
        """Run ``leader`` through one heartbeat interval and deliver everything: how followers
        learn a commit index that no new entry carries to them."""
        self.tick(leader, self.config.heartbeat_ticks)
        self.stabilize()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.ids:
                self.nodes[node].tick()
            self.process_all()

    def elect(self, node: int) -> None:
        """Make ``node`` campaign and run the election to completion."""
        self.nodes[node].campaign()
        self.stabilize()

    def leaders(self) -> list[int]:
        return [i for i, c in self.nodes.items() if c.role == Role.LEADER]

    def compact(self, node: int) -> None:
        """Snapshot ``node`` at its applied index (its data = the applied payloads joined)."""
        core = self.nodes[node]
        index = core.status()["applied"]
        assert isinstance(index, int)
        term = core.term_at(index)
        assert term is not None
        data = b"|".join(e.data for e in self.applied[node])
        core.compact(Snapshot(SnapshotMeta(index, term, core.voters, core.learners), data))
