"""Simulated faults: partitions, crashes, drops, duplicates and delays, reproducible from a seed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode, TLSMaterial
from shoal.testing.transport import ClusterPKI, collect
from shoal_transport_memory import MemoryNetwork, MemoryServer, MemoryTransport, VirtualTimeLoop

PING = "/shoal.Sim/Ping"
HANG = "/shoal.Sim/Hang"
TICKS = "/shoal.Sim/Ticks"


@dataclass
class Node:
    """One simulated node: its own transport, its server, and what its handlers saw."""

    name: str
    transport: MemoryTransport
    tls: TLSMaterial
    received: list[tuple[str, bytes]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    server: MemoryServer | None = None

    @property
    def address(self) -> str:
        assert self.server is not None
        return self.server.address

    async def ping(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        self.received.append((peer.node_id if peer else "anonymous", request))
        return self.name.encode() + b":" + request

    async def hang(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b""

    async def ticks(self, request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    async def call(self, other: Node, request: bytes, timeout: float = 10) -> bytes:  # noqa: ASYNC109
        return await self.transport.call(other.address, PING, request, tls=self.tls, timeout=timeout)


async def start_cluster(network: MemoryNetwork, pki: ClusterPKI, size: int = 3) -> list[Node]:
    nodes = []
    for i in range(1, size + 1):
        name = f"node-{i}"
        node = Node(name, MemoryTransport(network), pki.node(name))
        node.server = await node.transport.serve(
            f"{name}:2377", node.tls, {PING: node.ping, HANG: node.hang}, {TICKS: node.ticks}
        )
        nodes.append(node)
    return nodes


async def stop_cluster(nodes: list[Node]) -> None:
    for node in nodes:
        assert node.server is not None
        await node.server.stop(0)
        await node.transport.close()


@pytest.fixture(scope="module")
def pki() -> ClusterPKI:
    return ClusterPKI(cluster_id="sim")


@pytest.fixture
def network() -> MemoryNetwork:
    return MemoryNetwork(seed=42)


@pytest.fixture
async def cluster(network: MemoryNetwork, pki: ClusterPKI) -> AsyncIterator[list[Node]]:
    nodes = await start_cluster(network, pki)
    yield nodes
    await stop_cluster(nodes)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


async def unavailable(call: Callable[[], object]) -> str:
    with pytest.raises(RPCError) as caught:
        await call()  # type: ignore[misc]
    assert caught.value.code is StatusCode.UNAVAILABLE, caught.value
    return caught.value.message


# ---------------------------------------------------------------------------- partitions


async def test_partition_refuses_both_ways_at_once_and_heals(
    network: MemoryNetwork, cluster: list[Node]
) -> None:
    one, two, three = cluster
    network.delay = (0.2, 0.2)  # every delivered message takes 0.2s; refusals take none
    loop = asyncio.get_running_loop()
    network.partition([one.address], [two.address, three.address])
    started = loop.time()
    message = await unavailable(lambda: one.call(two, b"x"))
    assert message == f"cannot reach {two.address}: connection refused (network partition)"
    await unavailable(lambda: three.call(one, b"x"))
    assert loop.time() - started < 0.1
    assert one.received == two.received == []
    assert await two.call(three, b"same side") == b"node-3:same side"  # the majority still talks
    assert loop.time() - started >= 0.4
    network.heal()
    assert await one.call(two, b"healed") == b"node-2:healed"


async def test_partition_cuts_calls_and_streams_in_flight(
    network: MemoryNetwork, cluster: list[Node]
) -> None:
    one, two, _ = cluster
    hanging = asyncio.create_task(one.transport.call(two.address, HANG, b"", tls=one.tls, timeout=30))
    stream = one.transport.stream(two.address, TICKS, b"1000000", tls=one.tls)
    assert await anext(stream) == b"0"
    await until(lambda: len(network.links(lambda link: link.target == two.address)) == 2)
    network.partition([one.address], [two.address])
    assert "connection reset" in await unavailable(lambda: hanging)
    assert "connection reset" in await unavailable(lambda: collect(stream))
    await asyncio.wait_for(two.cancelled.wait(), 5)  # the server side was cancelled too
    assert network.stats["cut"] == 2


async def test_a_client_without_a_server_is_partitioned_by_name(
    network: MemoryNetwork, cluster: list[Node], pki: ClusterPKI
) -> None:
    cli = MemoryTransport(network, name="cli")
    one = cluster[0]
    network.partition(["cli"], [one.address])
    await unavailable(lambda: cli.call(one.address, PING, b"", tls=pki.anonymous(), timeout=5))
    assert await cli.call(cluster[1].address, PING, b"ok", tls=pki.anonymous(), timeout=5) == b"node-2:ok"


def test_an_address_on_both_sides_is_refused() -> None:
    with pytest.raises(ValueError, match="both sides"):
        MemoryNetwork().partition(["a:1", "b:1"], ["b:1"])


# ---------------------------------------------------------------------------- crashes


async def test_set_down_crashes_a_server_and_revives_it(network: MemoryNetwork, cluster: list[Node]) -> None:
    one, two, three = cluster
    hanging = asyncio.create_task(one.transport.call(two.address, HANG, b"", tls=one.tls, timeout=30))
    await until(lambda: bool(network.links(lambda link: link.target == two.address)))
    network.set_down(two.address, True)
    assert network.is_down(two.address)
    assert await unavailable(lambda: hanging) == f"cannot reach {two.address}: connection reset (peer down)"
    await asyncio.wait_for(two.cancelled.wait(), 5)  # its handler died with it
    assert await unavailable(lambda: three.call(two, b"x")) == (
        f"cannot reach {two.address}: connection refused ({two.address} is down)"
    )
    assert "caller node-2:2377 is down" in await unavailable(lambda: two.call(three, b"x"))
    assert await one.call(three, b"others fine") == b"node-3:others fine"
    network.set_down(two.address, False)
    assert await one.call(two, b"back") == b"node-2:back"


# ---------------------------------------------------------------------------- drops and duplicates


def _drop_trace(pki: ClusterPKI, seed: int) -> tuple[list[str], int, int]:
    """40 concurrent calls with 30% loss, in virtual time (so machine load cannot move a deadline)."""

    async def run() -> tuple[list[str], int, int]:
        network = MemoryNetwork(seed=seed, drop_rate=0.3)
        nodes = await start_cluster(network, pki, size=2)
        try:
            one, two = nodes

            async def outcome(i: int) -> str:
                try:
                    await one.call(two, str(i).encode(), timeout=0.05)
                    return "ok"
                except RPCError as exc:
                    return exc.code.name

            outcomes = list(await asyncio.gather(*(outcome(i) for i in range(40))))
            return outcomes, network.stats["dropped"], len(two.received)
        finally:
            await stop_cluster(nodes)

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(run())


def test_drops_are_lost_messages_reproducible_from_the_seed(pki: ClusterPKI) -> None:
    outcomes, dropped, handled = _drop_trace(pki, seed=11)
    assert set(outcomes) == {"ok", "DEADLINE_EXCEEDED"}
    assert (
        outcomes.count("DEADLINE_EXCEEDED") == dropped
    )  # a lost request or reply: the caller waits out its deadline
    assert 40 - dropped <= handled <= 40  # a lost reply's handler did run
    assert _drop_trace(pki, seed=11) == (outcomes, dropped, handled)
    assert _drop_trace(pki, seed=12)[0] != outcomes


async def test_dropped_stream_opening(network: MemoryNetwork, cluster: list[Node]) -> None:
    one, two, _ = cluster
    network.drop_rate = 1.0
    stream = one.transport.stream(
        two.address, TICKS, b"3", tls=one.tls
    )  # no deadline: fails rather than hang
    assert "connection reset" in await unavailable(lambda: collect(stream))
    with pytest.raises(RPCError) as caught:
        await collect(one.transport.stream(two.address, TICKS, b"3", tls=one.tls, timeout=0.05))
    assert caught.value.code is StatusCode.DEADLINE_EXCEEDED
    network.drop_rate = 0.0
    assert await collect(one.transport.stream(two.address, TICKS, b"3", tls=one.tls)) == [b"0", b"1", b"2"]


async def test_duplicates_reach_the_handler_twice_and_the_caller_once(
    network: MemoryNetwork, cluster: list[Node]
) -> None:
    one, two, _ = cluster
    network.duplicate_rate = 1.0
    assert await one.call(two, b"once") == b"node-2:once"
    await until(lambda: len(two.received) == 2)
    assert two.received == [("node-1", b"once"), ("node-1", b"once")]

    network.duplicate_rate = 0.5
    network.rng.seed(5)
    for i in range(20):
        await one.call(two, str(i).encode())
    expected = 2 + 20 + network.stats["duplicated"] - 1  # the first call's duplicate is counted too
    await until(lambda: len(two.received) == expected)
    assert 0 < network.stats["duplicated"] - 1 < 20


async def test_delay_is_on_the_loop_clock_and_keeps_stream_order(
    network: MemoryNetwork, cluster: list[Node]
) -> None:
    one, two, _ = cluster
    network.delay = (0.05, 0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await one.call(two, b"slow") == b"node-2:slow"
    assert 0.1 <= loop.time() - started  # request and reply each spent >= 0.05s on the wire
    started = loop.time()
    assert await collect(one.transport.stream(two.address, TICKS, b"5", tls=one.tls)) == [
        str(i).encode() for i in range(5)
    ]
    assert loop.time() - started >= 0.3  # the opening and each of 5 messages


def test_fault_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"drop_rate must be between 0 and 1, got 1\.5"):
        MemoryNetwork(drop_rate=1.5)
    network = MemoryNetwork()
    with pytest.raises(ValueError, match="duplicate_rate"):
        network.duplicate_rate = -0.1
    with pytest.raises(ValueError, match="delay must be"):
        network.delay = (2.0, 1.0)


# ---------------------------------------------------------------------------- whole-cluster simulation


def _simulate(pki: ClusterPKI, seed: int) -> tuple[list[tuple[float, str, str, str]], float]:
    """Three nodes calling each other under every fault at once, in virtual time."""

    async def run() -> tuple[list[tuple[float, str, str, str]], float]:
        network = MemoryNetwork(seed=seed, drop_rate=0.1, duplicate_rate=0.1, delay=(0.5, 2.0))
        nodes = await start_cluster(network, pki)
        loop = asyncio.get_running_loop()
        start = loop.time()
        trace: list[tuple[float, str, str, str]] = []
        choices = random.Random(seed)

        async def chatter(node: Node) -> None:
            for i in range(15):
                peer = choices.choice([n for n in nodes if n is not node])
                try:
                    reply = (await node.call(peer, f"{node.name}#{i}".encode(), timeout=5)).decode()
                except RPCError as exc:
                    reply = exc.code.name
                trace.append((round(loop.time() - start, 9), node.name, peer.name, reply))

        async def chaos() -> None:
            await asyncio.sleep(7)
            network.partition([nodes[0].address], [n.address for n in nodes[1:]])
            await asyncio.sleep(10)
            network.heal()
            network.set_down(nodes[2].address, True)
            await asyncio.sleep(10)
            network.set_down(nodes[2].address, False)

        try:
            await asyncio.gather(chaos(), *(chatter(n) for n in nodes))
            return trace, loop.time() - start
        finally:
            await stop_cluster(nodes)

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(run())


def test_whole_cluster_simulation_replays_exactly_from_its_seed(pki: ClusterPKI) -> None:
    trace, elapsed = _simulate(pki, seed=2024)
    outcomes = {reply if reply.isupper() else "ok" for *_, reply in trace}
    assert outcomes == {"ok", "UNAVAILABLE", "DEADLINE_EXCEEDED"}  # every fault showed up
    assert len(trace) == 45
    assert elapsed > 27  # simulated seconds (delays, deadlines, the chaos schedule), not wall-clock
    assert _simulate(pki, seed=2024) == (trace, elapsed)
    assert _simulate(pki, seed=2025)[0] != trace
