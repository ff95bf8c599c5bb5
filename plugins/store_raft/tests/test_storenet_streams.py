"""The kernel's StoreNetwork over pull streams, with real RaftStores and the memory transport on
virtual time (the memsim harness, without its chaos).

Once the leader and a follower have exchanged a message, each holds a ``StorePull`` stream open
to the other and replication runs over them: no ``StoreStep`` call per commit. A follower cut
off loses its streams; the others go on committing; after the cut heals, the streams reopen
and the follower catches up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from memsim.clients import put
from memsim.cluster import MemSimConfig, MemSimulation
from memsim.member import SimMember

Body = Callable[["_Scenario"], Awaitable[None]]


class _Scenario(MemSimulation):
    """Form a 3-member cluster on a quiet network, then run ``body``."""

    def __init__(self, body: Body) -> None:
        super().__init__(seed=7, cfg=MemSimConfig(members=3))
        self.body = body

    async def _main(self) -> None:
        await self._form_cluster()
        await self.body(self)

    def pair_streams(self, leader: SimMember, follower: SimMember) -> bool:
        """Both directions between ``leader`` and ``follower`` have a pull stream open."""
        assert leader.net is not None and follower.net is not None
        out = leader.net._peers.get(follower.member_id)
        back = follower.net._peers.get(leader.member_id)
        return out is not None and out.outlet is not None and back is not None and back.outlet is not None

    def followers(self, leader: SimMember) -> list[SimMember]:
        return [m for m in self.live() if m is not leader]

    async def write(self, leader: SimMember, value: int) -> None:
        assert leader.objects is not None
        await leader.objects.update(lambda tx: put(tx, "k-a", value))


def test_replication_runs_over_the_pull_streams() -> None:
    async def body(sim: _Scenario) -> None:
        leader = sim.leader()
        assert leader is not None
        followers = sim.followers(leader)
        await sim._wait(
            lambda: all(sim.pair_streams(leader, f) for f in followers), 10, "pull streams did not open"
        )
        steps = sum(m.steps_handled for m in sim.members.values())
        for value in range(50):
            await sim.write(leader, value)
        await sim._wait(sim._converged, 10, "the members did not converge")
        assert sum(m.steps_handled for m in sim.members.values()) == steps

    _Scenario(body).run()


def test_a_cut_follower_loses_its_streams_then_reopens_them_and_catches_up() -> None:
    async def body(sim: _Scenario) -> None:
        leader = sim.leader()
        assert leader is not None
        cut, other = sim.followers(leader)
        await sim._wait(lambda: sim.pair_streams(leader, cut), 10, "pull streams did not open")
        sim.network.partition([cut.addr], [leader.addr, other.addr])
        await sim._wait(lambda: not sim.pair_streams(leader, cut), 5, "the cut did not end the streams")
        for value in range(20):
            await sim.write(leader, value)  # the leader and the other follower are a majority
        sim.network.heal()
        await sim._wait(lambda: sim.pair_streams(leader, cut), 10, "the streams did not reopen")
        await sim._wait(sim._converged, 10, "the cut follower did not catch up")

    _Scenario(body).run()
