"""hypothesis stateful testing of the Raft core: hypothesis picks the schedule, and shrinks
any failing one to a minimal sequence of proposals, deliveries, drops, ticks, crashes,
restarts, partitions, heals, membership changes and transfers.

The world is the simulator's (``raftsim.cluster``: durable vs cached disk state, client
history), but every message is delivered, dropped or duplicated by a hypothesis rule.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from raftsim.cluster import SimConfig, Simulation
from raftsim.linearizability import check_history


class RaftMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sim = Simulation(0, SimConfig(members=3, loss=0.0, dup=0.0, max_delay=0))

    def _member(self, n: int) -> int:
        ids = sorted(self.sim.members)
        return ids[n % len(ids)]

    @rule()
    def propose(self) -> None:
        self.sim._invoke("w")

    @rule()
    def read(self) -> None:
        self.sim._invoke("r")

    @precondition(lambda self: bool(self.sim.network))
    @rule(i=st.integers(min_value=0))
    def deliver(self, i: int) -> None:
        sim = self.sim
        _, _, msg = sim.network.pop(i % len(sim.network))
        dst = sim.members.get(msg.to)
        if dst is None or dst.core is None or frozenset((msg.frm, msg.to)) in sim.cut:
            return
        dst.core.step(msg)
        sim._process(dst)
        sim.check_step(dst)

    @precondition(lambda self: bool(self.sim.network))
    @rule(i=st.integers(min_value=0))
    def drop(self, i: int) -> None:
        self.sim.network.pop(i % len(self.sim.network))

    @precondition(lambda self: bool(self.sim.network))
    @rule(i=st.integers(min_value=0))
    def duplicate(self, i: int) -> None:
        self.sim.network.append(self.sim.network[i % len(self.sim.network)])

    @rule(n=st.integers(0, 7), times=st.integers(1, 12))
    def tick(self, n: int, times: int) -> None:
        m = self.sim.members[self._member(n)]
        for _ in range(times):
            if m.core is None:
                return
            m.core.tick()
            self.sim._process(m)

    @rule(n=st.integers(0, 7))
    def crash(self, n: int) -> None:
        node = self._member(n)
        if self.sim.members[node].core is not None:
            self.sim.crash(node)

    @rule(n=st.integers(0, 7))
    def restart(self, n: int) -> None:
        node = self._member(n)
        if self.sim.members[node].core is None:
            self.sim.restart(node)

    @rule(n=st.integers(0, 7))
    def partition(self, n: int) -> None:
        node = self._member(n)
        self.sim.cut = {frozenset((node, o)) for o in self.sim.members if o != node}

    @rule()
    def heal(self) -> None:
        self.sim.cut = set()

    @rule()
    def conf_change(self) -> None:
        self.sim._conf_change()

    @rule(n=st.integers(0, 7))
    def transfer_leadership(self, n: int) -> None:
        for m in self.sim.leaders():
            assert m.core is not None
            m.core.transfer_leadership(self._member(n))
            self.sim._process(m)

    @invariant()
    def safety(self) -> None:
        self.sim.check_step()
        self.sim.check_logs()

    def teardown(self) -> None:
        for w in self.sim.writes:
            self.sim._finish(w.op, "unknown")
        for r in self.sim.reads:
            self.sim._finish(r.op, "fail")
        ok, why = check_history(self.sim.ops)
        assert ok, why


RaftMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRaftStateful = RaftMachine.TestCase
