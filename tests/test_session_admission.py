"""The leader's dispatcher admits a bounded number of session registrations at once and turns the
other opens away with a retry-after, which the agents honour (issue 18).

After a leader change a thousand agents reopened their sessions at once, each a registration
on the new leader; the agents timed out on the first session message after 5 s and retried,
which kept the herd going. Here one manager restarts (a new leader, a new dispatcher) with a
limit of one registration at a time and the registrations held until every other node has been
turned away: opens are counted as served or turned away, the agents come back when told, a
retry while a registration is under way joins it, and every node ends Ready with none marked
Down meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from shoal.agent import agent as agent_module
from shoal.daemon import leaderwait
from shoal.manager import dispatcher as dispatcher_module
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.netobjects import Allocations, ingress_of
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import PeerIdentity
from shoal.store.memory import Tx, copy
from shoal.testing.cluster import InProcessCluster, _rows

WORKERS = 5
NODES = WORKERS + 1  # the manager runs an agent too
#: The agents' wait for a first session message, shortened so that the agent whose
#: registration is held gives up and retries while it is (5 s otherwise).
AGENT_TIMEOUT = 1.0
#: How long an election may take on a loaded machine (the managers share one event loop here).
ELECTION_DEADLINE = 60.0
#: asyncio's clock may wake a sleeper a hair before the exact time.
CLOCK_SLACK = 0.01


class Opens:
    """Every session open the leader saw: node, when, and the retry-after it was given (0:
    served, None: no first message yet)."""

    def __init__(self) -> None:
        self.seen: list[list[Any]] = []

    def record(self, monkeypatch: pytest.MonkeyPatch) -> None:
        session = Dispatcher.session
        seen = self.seen

        async def recorded(
            dispatcher: Dispatcher, request: bytes, peer: PeerIdentity | None
        ) -> AsyncIterator[bytes]:
            entry: list[Any] = [peer.node_id if peer is not None else "", time.monotonic(), None]
            seen.append(entry)
            async for raw in session(dispatcher, request, peer):
                if entry[2] is None:
                    entry[2] = rpb.SessionMessage.FromString(raw).retry_after
                yield raw

        monkeypatch.setattr(Dispatcher, "session", recorded)

    def turned_away(self) -> set[str]:
        return {node for node, _, retry_after in self.seen if retry_after}

    def served(self) -> set[str]:
        return {node for node, _, retry_after in self.seen if retry_after == 0}

    def count(self, node: str) -> int:
        return sum(1 for seen, _, _ in self.seen if seen == node)

    def by_node(self) -> dict[str, list[tuple[float, float | None]]]:
        opens: dict[str, list[tuple[float, float | None]]] = collections.defaultdict(list)
        for node, at, retry_after in self.seen:
            opens[node].append((at, retry_after))
        return opens


class HeldRegistrations:
    """Holds every registration until released; counts those started per node and any that
    started while the same node's previous one was still under way."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: collections.Counter[str] = collections.Counter()
        self.under_way: set[str] = set()
        self.restarted: list[str] = []
        self.first = ""

    def hold(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Absent before the gate (the registration was inline in the session): nothing held.
        register = getattr(Dispatcher, "_register", None)

        async def held(dispatcher: Dispatcher, node_id: str, description: pb.NodeDescription) -> None:
            if node_id in self.under_way:
                self.restarted.append(node_id)
            self.first = self.first or node_id
            self.started[node_id] += 1
            self.under_way.add(node_id)
            try:
                await self.release.wait()
                assert register is not None
                await register(dispatcher, node_id, description)
            finally:
                self.under_way.discard(node_id)

        monkeypatch.setattr(Dispatcher, "_register", held, raising=False)


def ingress_tries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The nodes an ingress address is looked for from now on, in order."""
    tries: list[str] = []
    node_ingress = Allocations.node_ingress

    def counted(allocations: Allocations, node: pb.Node) -> bool:
        tries.append(node.id)
        return node_ingress(allocations, node)

    monkeypatch.setattr(Allocations, "node_ingress", counted)
    return tries


async def test_a_herd_of_session_opens_is_turned_away_and_comes_back_when_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "MAX_CONCURRENT_REGISTRATIONS", 1, raising=False)
    # Every reopen a registration that writes (nodes that changed while the leader was away):
    # a reopen that would write nothing takes no slot (the next test).
    monkeypatch.setattr(Dispatcher, "_reopened", lambda *args: False, raising=False)
    async with InProcessCluster(tmp_path, workers=WORKERS) as cluster:
        opens, registrations = Opens(), HeldRegistrations()
        opens.record(monkeypatch)
        registrations.hold(monkeypatch)
        monkeypatch.setattr(agent_module, "RPC_TIMEOUT", AGENT_TIMEOUT)
        await cluster.restart(cluster.node("m1"))  # a new leader: every agent reopens
        leader = await cluster.wait_until(cluster.leader, "a leader")
        assert leader.daemon.manager is not None
        dispatcher = await cluster.wait_until(lambda: leader.daemon.manager.dispatcher, "its dispatcher")
        downed: list[str] = []

        def note_down(rows: list[dict[str, str]]) -> None:
            downed.extend(row["Hostname"] for row in rows if row.get("Status") == "Down")

        async def herd_held() -> bool:
            """Every other node turned away at least once, and the held node retried."""
            note_down(_rows(await cluster.call("node.ls")))
            held = registrations.first
            return bool(held) and len(opens.turned_away() - {held}) == NODES - 1 and opens.count(held) >= 2

        await cluster.wait_until(herd_held, "every other node turned away and the held node's retry")
        assert dispatcher.gate.peak == 1 and dispatcher.gate.in_flight == 1
        registrations.release.set()

        async def all_back() -> bool:
            rows = _rows(await cluster.call("node.ls"))
            note_down(rows)
            ready = sum(1 for row in rows if row.get("Status") == "Ready")
            agents = [node.daemon.agent for node in cluster.nodes]
            return ready == NODES and all(a is not None and a.connected.is_set() for a in agents)

        await cluster.wait_until(all_back, "every node Ready and every agent's session open")

        assert downed == [], f"nodes marked Down while the herd was turned away: {downed}"
        assert opens.served() == {node.node_id for node in cluster.nodes}
        assert dispatcher.gate.turned_away >= NODES - 1 and dispatcher.gate.peak == 1
        assert registrations.restarted == [], "a retry restarted a registration under way"
        assert registrations.started[registrations.first] == 1
        for node, seen in opens.by_node().items():
            for (at, retry_after), (again, _) in itertools.pairwise(seen):
                assert again - at >= (retry_after or 0) - CLOCK_SLACK, (
                    f"{node} came back {again - at:.2f} s after being told {retry_after:.2f} s"
                )


async def test_after_the_leader_crashes_agents_wait_for_the_election_not_go_back_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader crashes; each agent opens its session with a follower that, until its election
    timeout, still names the dead leader. It used to send the agent straight back there (each
    try doubling the agent's backoff, so sessions came back seconds after the election); now
    the follower holds the open until a new leader is known and sends the agent to it."""
    from shoal_transport_memory import NETWORK

    sent_to: list[tuple[str, str]] = []  # (agent's node, the leader a redirect named)
    session = agent_module.Agent._session

    async def recorded(agent: agent_module.Agent, manager: str) -> None:
        try:
            await session(agent, manager)
        finally:
            if agent._redirected:
                sent_to.append((agent.node_id, agent.managers[0]))

    monkeypatch.setattr(agent_module.Agent, "_session", recorded)
    # Past its wait a follower sends the agent to the leader it names (then alive: it heard from
    # it); an election slowed by a loaded machine must not end the wait first.
    monkeypatch.setattr(leaderwait, "SESSION_LEADER_WAIT", ELECTION_DEADLINE)
    async with InProcessCluster(tmp_path, managers=3, workers=2) as cluster:
        old = cluster.leader()
        assert old is not None
        workers = [cluster.node("w1"), cluster.node("w2")]
        sent_to.clear()
        NETWORK.set_down(old.addr, True)  # a crash, as far as the others can tell
        try:
            new = await cluster.wait_until(
                lambda: next(
                    (m for m in cluster.managers() if m is not old and m.daemon.manager.is_leader()), None
                ),
                "a new leader",
                ELECTION_DEADLINE,
            )

            def back() -> bool:
                dispatcher = new.daemon.manager.dispatcher
                if dispatcher is None:
                    return False
                with_session = {s.node_id for s in dispatcher._sessions.values()}
                return all(w.node_id in with_session and w.daemon.agent.connected.is_set() for w in workers)

            await cluster.wait_until(
                back, "both workers' sessions open with the new leader", ELECTION_DEADLINE
            )
            back_to_dead = [node for node, leader in sent_to if leader == old.addr]
            assert back_to_dead == [], f"agents sent back to the crashed leader: {sent_to}"
        finally:
            NETWORK.set_down(old.addr, False)


async def test_a_node_the_ingress_subnet_cannot_hold_is_not_allocated_again_at_each_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond a full ingress subnet (750 of 1,000 hollow nodes on a /24) every registration
    tried again: a scan of every task and node for the addresses in use, and a warning line,
    each time a session reopened (a thousand at once after a hiccup). Once refused, a node is
    not tried again by this leader. A /29 makes the point with 8 workers."""
    async with InProcessCluster(
        tmp_path, workers=8, init_options={"default_addr_pool_mask_length": "29"}
    ) as cluster:
        leader = cluster.leader()
        assert leader is not None and leader.daemon.manager is not None
        dispatcher = leader.daemon.manager.dispatcher
        assert dispatcher is not None
        ingress = ingress_of(leader.daemon.manager.store.view.networks.all())
        assert ingress is not None
        nodes = leader.daemon.manager.store.view.nodes.all()
        without = [n for n in nodes if not any(a.network.id == ingress.id for a in n.attachments)]
        assert without, "every node got an ingress address: the subnet is not full"
        tries = ingress_tries(monkeypatch)
        for node in without:  # as their sessions reopen
            await dispatcher._register(node.id, node.description)
        assert tries == [], f"{len(tries)} nodes without an ingress address were allocated again"


async def test_after_a_leader_change_nodes_without_an_ingress_address_reopen_without_looking_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new leader knows nothing of which nodes the ingress subnet could not hold. Each of
    them (750 of 1,000 hollow nodes on a /24) looked for an address again as its session
    reopened: a transaction and a scan of every task and node each, run back to back in a
    group commit, seconds of the new leader's loop after a failover. Now a Ready node reopens
    with nothing looked for on its path, and the addresses are looked for in the background,
    in one transaction for all of them: one node is given the address freed meanwhile, the
    next is refused, and the rest are not tried (the subnet is full) and marked refused.
    A /29 makes the point with 8 workers."""
    async with InProcessCluster(
        tmp_path, workers=8, init_options={"default_addr_pool_mask_length": "29"}
    ) as cluster:
        leader = cluster.leader()
        assert leader is not None and leader.daemon.manager is not None
        manager = leader.daemon.manager
        store = manager.store
        ingress = ingress_of(store.view.networks.all())
        assert ingress is not None

        def on_ingress(node: pb.Node) -> bool:
            return any(a.network.id == ingress.id for a in node.attachments)

        # One node loses its address (as if freed): there is room for exactly one again.
        freed = next(n for n in store.view.nodes.all() if on_ingress(n) and n.role == pb.NodeSpec.WORKER)

        def strip(tx: Tx) -> None:
            node = copy(tx.node(freed.id))
            del node.attachments[:]
            tx.update(node)

        await store.update(strip)
        without = [n for n in store.view.nodes.all() if not on_ingress(n)]
        assert len(without) >= 2, "every node has an ingress address: the subnet is not full"
        tries = ingress_tries(monkeypatch)
        # Looks made outside the background fill (``_attach_ingress``) are on a reopen's path.
        # The fill may run before the reopens' gather resumes (a lone write is proposed in
        # the loop turn that made it), so the tries alone cannot tell the two apart.
        on_path: list[str] = []
        filling = False
        attach, looked_up = Dispatcher._attach_ingress, Allocations.node_ingress

        def attach_marked(dispatcher: Dispatcher, tx: Tx, node_ids: set[str]) -> None:
            nonlocal filling
            filling = True
            try:
                attach(dispatcher, tx, node_ids)
            finally:
                filling = False

        def look_watched(allocations: Allocations, node: pb.Node) -> bool:
            if not filling:
                on_path.append(node.id)
            return looked_up(allocations, node)

        monkeypatch.setattr(Dispatcher, "_attach_ingress", attach_marked)
        monkeypatch.setattr(Allocations, "node_ingress", look_watched)
        successor = Dispatcher(store, manager.cluster_id, manager.manager_addrs)  # a new leader's
        successor.start()
        try:
            await asyncio.gather(*(successor._register(node.id, node.description) for node in without))
            assert on_path == [], f"{len(on_path)} reopening sessions waited on a look for an ingress address"

            def given_now() -> list[str]:
                return [n.id for n in without if on_ingress(store.view.nodes.get(n.id))]

            # The refusals are noted as the fill's transaction runs; the address given shows in
            # the store once that transaction is committed and applied.
            await cluster.wait_until(
                lambda: len(successor._without_ingress) == len(without) - 1 and given_now() != [],
                "every node without an address given one or refused",
            )
            # One given the free address, the next refused, the rest not tried (the subnet is full).
            assert len(tries) == 2, f"{len(tries)} nodes tried for {len(without)} reopening"
            given = given_now()
            assert given == tries[:1] and given[0] not in successor._without_ingress
        finally:
            await successor.stop()
