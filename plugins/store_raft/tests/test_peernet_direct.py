"""``PeerNetwork`` with direct links: two members on a real event loop, the memory transport for
their gRPC methods and real TLS on loopback for the links.

A member that serves links gets one from each peer it talks to, and then sends that peer's
messages on it; when the kernel's check refuses the peer, the link closes and the message
still arrives, by the pull stream: a link never loses what it refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode
from shoal.testing.dispatchprobe import until
from shoal.testing.transport import ClusterPKI
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.peernet import PeerNetwork
from shoal_store_raft.peers import PeerBook
from shoal_transport_memory import MemoryTransport
from shoal_transport_memory.network import MemoryNetwork


@dataclass
class Replica:
    member_id: int
    received: list[bytes] = field(default_factory=list)

    def receive(self, data: bytes) -> None:
        self.received.append(data)

    def report_unreachable(self, member_id: int) -> None:
        pass

    def is_member(self, member_id: int) -> bool:
        return True


@dataclass
class Member:
    replica: Replica
    net: PeerNetwork
    refused: set[str] = field(default_factory=set)


@asynccontextmanager
async def two_members() -> AsyncIterator[tuple[Member, Member]]:
    pki, network = ClusterPKI(), MemoryNetwork()
    names = {1: ("node-a", "127.0.0.1:7101"), 2: ("node-b", "127.0.0.1:7102")}
    members: list[Member] = []
    servers = []
    for member_id, (node_id, addr) in names.items():
        tls = pki.node(node_id)
        book = PeerBook(None)
        for other, (other_node, other_addr) in names.items():
            book.learn(other, other_node, other_addr)
        replica = Replica(member_id)
        transport = MemoryTransport(network)
        refused: set[str] = set()

        def authorize(method: str, peer: PeerIdentity | None, refused: set[str] = refused) -> None:
            if peer is None or peer.node_id in refused:
                raise RPCError(StatusCode.PERMISSION_DENIED, "refused")

        net = PeerNetwork(
            replica=replica,
            book=book,
            transport=transport,
            tls=lambda tls=tls: tls,  # type: ignore[misc]
            node_id=node_id,
            advertise_addr=addr,
            on_removed=lambda message: None,
            authorize=authorize,
        )
        unary, streams = net.handlers()
        servers.append(await transport.serve(addr, tls, unary, streams))
        await net.start_direct(0)
        members.append(Member(replica, net, refused))
    try:
        yield members[0], members[1]
    finally:
        for member in members:
            await member.net.close()
        for server in servers:
            await server.stop(0)


async def test_messages_go_on_the_link_and_a_refused_one_still_arrives_by_gRPC() -> None:
    async with two_members() as (a, b):
        assert a.net.direct_addr and b.net.direct_addr
        b.net.send(1, b"hello a")  # first contact: A starts pulling from B, and links to it
        await until(lambda: b"hello a" in a.replica.received, "the first message")
        await until(lambda: b.net._peers[1].link is not None, "A's link to B")
        link = b.net._peers[1].link
        assert link is not None
        for i in range(100):
            b.net.send(1, b"m%d" % i)
        await until(lambda: a.replica.received[-1:] == [b"m99"], "the messages on the link")
        assert a.replica.received[-100:] == [b"m%d" % i for i in range(100)]
        assert not link.closed  # they went on the link (a refused one would close it)
        b_links, a_links = b.net.link_status(), a.net.link_status()
        assert (b_links["listener"], a_links["listener"]) == (b.net.direct_addr, a.net.direct_addr)
        assert "1" in b_links["to"] and "2" in a_links["from"]  # (and the other way, once A sends)
        # B's kernel stops admitting node-a: the link closes at the next message, which goes
        # by the pull stream instead.
        b.refused.add("node-a")
        b.net.send(1, b"after the refusal")
        assert link.closed and b.net._peers[1].link is not link
        assert b.net.link_status()["to"] == []
        await until(lambda: b"after the refusal" in a.replica.received, "the refused message by gRPC")


def ephemeral_low() -> int:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        return int(ports.read().split()[0])


async def test_any_free_port_is_below_the_ephemeral_range() -> None:
    """A listener on "any free port" never takes one the kernel may hand to another program
    asking for a free port (a test harness's daemons-to-be, an outgoing connection)."""
    low = ephemeral_low()
    async with two_members() as (a, b):
        for member in (a, b):
            assert int(member.net.direct_addr.rpartition(":")[2]) < low


async def test_without_the_kernels_check_no_listener_is_served() -> None:
    pki = ClusterPKI()
    tls = pki.node("node-a")
    net = PeerNetwork(
        replica=Replica(1),
        book=PeerBook(None),
        transport=MemoryTransport(MemoryNetwork()),
        tls=lambda: tls,
        node_id="node-a",
        advertise_addr="127.0.0.1:7201",
        on_removed=lambda message: None,
    )
    await net.start_direct(0)
    assert net.direct_addr == ""
    await net.close()


def test_direct_link_options_are_checked() -> None:
    assert (RaftOptions.parse({}).direct_links, RaftOptions.parse({}).direct_port) == (1, 0)
    options = RaftOptions.parse({"direct-links": "0", "direct-port": "7946"})
    assert (options.direct_links, options.direct_port) == (0, 7946)
    for key, value, error in (
        ("direct-links", "2", "direct-links must be at most 1"),
        ("direct-port", "65536", "direct-port must be at most 65535"),
        ("direct-port", "-1", "direct-port must be 0 \\(any free port\\) or a positive integer"),
    ):
        with pytest.raises(ValueError, match=error):
            RaftOptions.parse({key: value})
