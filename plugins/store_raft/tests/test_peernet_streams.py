"""The raft store's peer network (``peernet``) over pull streams, with real RaftStores and the
memory transport on virtual time (the memsim harness, without its chaos).

Once the leader and a follower have exchanged a message, each holds a ``RaftPull`` stream open
to the other and replication runs over them: no ``RaftStep`` call per commit. A follower cut
off loses its streams; the others go on committing; after the cut heals, the streams reopen
and the follower catches up. Members are added as the kernel adds them (``add_member(node_id,
addr)``) and are told no address: the membership the kernel sees and every member's book come
from ``RaftHello`` and the books members pass each other.
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


def test_members_are_named_by_node_and_every_member_learns_every_address() -> None:
    async def body(sim: _Scenario) -> None:
        leader = sim.leader()
        assert leader is not None and leader.store is not None
        names = {m.name: m for m in sim.live()}
        members = leader.store.members()
        assert {m.node_id for m in members} == set(names)
        assert all(m.addr == names[m.node_id].addr and m.voter and m.store_id for m in members)
        lead = leader.store.leader()
        assert lead is not None and lead.node_id == leader.name and lead.addr == leader.addr

        def books_complete() -> bool:
            return all(
                m.store is not None and m.store.book.address(o.member_id) == o.addr
                for m in sim.live()
                for o in sim.live()
            )

        await sim._wait(books_complete, 10, "a member's book misses another's address")

    _Scenario(body).run()


def test_a_leader_removes_a_manager_by_node_id_and_hands_over_by_node_id() -> None:
    async def body(sim: _Scenario) -> None:
        leader = sim.leader()
        assert leader is not None and leader.store is not None
        victim, other = sim.followers(leader)
        await leader.store.remove_member(victim.name)
        assert {m.node_id for m in leader.store.members()} == {leader.name, other.name}
        await leader.store.remove_member("no-such-node")  # not a member: nothing to do
        new = await leader.store.transfer_leadership(timeout=5)
        assert new == other.name
        await sim._wait(lambda: sim.leader() is other, 5, "the other member did not take over")

    _Scenario(body).run()
