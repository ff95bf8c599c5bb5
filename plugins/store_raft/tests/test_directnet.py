"""The raft store's direct links (``directnet``): real TLS on loopback, certificates from an
in-memory cluster CA (``ClusterPKI``), one listener (member B) and one puller (member A).

What a link must do: carry B's messages to A once both certificates check out; ask the
kernel's check (``authorize``) before every message and close when it refuses; refuse a hello
for a member its book names another node for, a certificate of another root, an expired
certificate, a root that changed; and A must refuse a listener that is not the manager it
expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode, TLSMaterial
from shoal.testing.dispatchprobe import until
from shoal.testing.transport import ClusterPKI
from shoal_store_raft import directnet
from shoal_store_raft.directnet import DirectServer, Link, LinkRefused, TLSContexts

CLUSTER = "cluster-test"
A_MEMBER, B_MEMBER = 0xA1, 0xB2


@dataclass
class Listener:
    """B's side, as ``PeerNetwork`` drives it."""

    server: DirectServer
    addr: str
    links: list[Link] = field(default_factory=list)
    checks: list[PeerIdentity | None] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)


@asynccontextmanager
async def listening(
    material: TLSMaterial | Callable[[], TLSMaterial], book: dict[int, str] | None = None
) -> AsyncIterator[Listener]:
    tls = material if callable(material) else (lambda: material)
    names = {A_MEMBER: "node-a"} if book is None else book

    def authorize(peer: PeerIdentity) -> None:
        listener.checks.append(peer)
        if peer.role != "swarm-manager" or peer.node_id in listener.refuse:
            raise RPCError(StatusCode.PERMISSION_DENIED, f"node {peer.node_id} may not")

    server = DirectServer(
        contexts=TLSContexts(tls),
        authorize=authorize,
        node_of=lambda member: names.get(member, ""),
        on_link=lambda link: listener.links.append(link),
        on_unlink=lambda link: listener.links.remove(link) if link in listener.links else None,
    )
    port = await server.start("127.0.0.1", 0)
    listener = Listener(server, f"127.0.0.1:{port}")
    try:
        yield listener
    finally:
        await server.close()


def start_pull(
    listener: Listener, material: TLSMaterial, *, member: int = A_MEMBER, expect: str = "node-b"
) -> tuple[asyncio.Task[None], list[bytes]]:
    frames: list[bytes] = []
    task = asyncio.get_running_loop().create_task(
        directnet.pull(
            listener.addr,
            contexts=TLSContexts(lambda: material),
            member_id=member,
            expect_node=expect,
            on_frame=frames.append,
        )
    )
    return task, frames


async def linked(
    listener: Listener,
    material: TLSMaterial,
    what: str = "the link to be admitted",
    *,
    member: int = A_MEMBER,
) -> tuple[asyncio.Task[None], list[bytes], Link]:
    """A pull that ``listener`` admitted: the pull, what it received, B's end of the link."""
    task, frames = start_pull(listener, material, member=member)
    await until(lambda: bool(listener.links), what)
    return task, frames, listener.links[0]


async def test_a_link_carries_every_message_and_checks_the_peer_before_each() -> None:
    pki = ClusterPKI(CLUSTER)
    async with listening(pki.node("node-b")) as b:
        pull, frames, link = await linked(b, pki.node("node-a"))
        assert (link.member_id, link.peer) == (A_MEMBER, PeerIdentity("node-a", "swarm-manager", CLUSTER))
        checks = len(b.checks)
        messages = [f"message {i}".encode() * (i + 1) for i in range(200)]
        for message in messages:
            assert b.server.send(link, message)
        await until(lambda: len(frames) == len(messages), "every message to arrive")
        assert frames == messages
        assert len(b.checks) == checks + len(messages)  # one check per message
        # The kernel stops admitting the node: the next message is refused, the link closes.
        b.refuse.add("node-a")
        assert not b.server.send(link, b"after the refusal")
        assert not b.links
        await asyncio.wait_for(pull, 10)  # A's end sees the link end
        assert frames == messages


async def test_a_large_frame_arrives_whole() -> None:
    pki = ClusterPKI(CLUSTER)
    async with listening(pki.node("node-b")) as b:
        pull, frames, link = await linked(b, pki.node("node-a"))
        big = bytes(range(256)) * (directnet.MAX_FRAME // 256)
        assert b.server.send(link, big)
        await until(lambda: bool(frames), "the large message")
        assert frames == [big]
        pull.cancel()


async def test_a_worker_or_a_refused_manager_gets_no_link() -> None:
    pki = ClusterPKI(CLUSTER)
    async with listening(pki.node("node-b"), {A_MEMBER: "node-a", 0xC3: "wrk-c"}) as b:
        b.refuse.add("node-a")
        for material, member in ((pki.node("node-a"), A_MEMBER), (pki.node("wrk-c", "swarm-worker"), 0xC3)):
            pull, frames = start_pull(b, material, member=member)
            await ended(pull)  # closed at once by B
            assert not frames and not b.links
        assert [p.node_id for p in b.checks if p is not None] == ["node-a", "wrk-c"]


async def test_a_hello_for_another_nodes_member_is_refused() -> None:
    pki = ClusterPKI(CLUSTER)
    async with listening(pki.node("node-b"), {A_MEMBER: "node-a", 0xD4: "node-d"}) as b:
        for member in (0xD4, 0xEE):  # another node's member; one the book does not know
            pull, frames = start_pull(b, pki.node("node-a"), member=member)
            await ended(pull)
            assert not frames and not b.links
        # its own member: admitted
        pull, _, _ = await linked(
            b, pki.node("node-a"), "the link for the node's own member", member=A_MEMBER
        )
        pull.cancel()


async def ended(pull: asyncio.Task[None]) -> None:
    """Wait for a pull that B refused at the handshake to end: with TLS 1.3 the client learns
    of it as an alert or a reset after its own handshake finished, or as the link closing."""
    with contextlib.suppress(ssl.SSLError, ConnectionError, LinkRefused):
        await asyncio.wait_for(pull, 10)


async def test_certificates_of_another_root_or_expired_get_no_link() -> None:
    pki, other = ClusterPKI(CLUSTER), ClusterPKI(CLUSTER)
    now = dt.datetime.now(dt.UTC)
    async with listening(pki.node("node-b")) as b:
        stranger = other.node("node-a")
        intruder = TLSMaterial(root_pem=pki.root_pem, cert_pem=stranger.cert_pem, key_pem=stranger.key_pem)
        expired = pki.node(
            "node-a", not_before=now - dt.timedelta(hours=2), not_after=now - dt.timedelta(hours=1)
        )
        for material in (intruder, expired):
            pull, frames = start_pull(b, material)
            await ended(pull)
            assert not frames and not b.links
        assert not b.checks  # refused at the handshake, before the kernel was asked
        # The same listener admits a good certificate (the refusals above were not an accident).
        pull, _, _ = await linked(b, pki.node("node-a"), "a good certificate's link")
        pull.cancel()


async def test_a_certificate_that_expires_while_linked_loses_the_link() -> None:
    pki = ClusterPKI(CLUSTER)
    async with listening(pki.node("node-b")) as b:
        pull, _, link = await linked(b, pki.node("node-a"))
        link.not_after = 0.0  # as if its certificate's end had passed
        assert not b.server.send(link, b"late")
        assert not b.links
        await asyncio.wait_for(pull, 10)


async def test_a_root_rotation_closes_links_admitted_under_the_old_root() -> None:
    pki = ClusterPKI(CLUSTER)
    current = {"tls": pki.node("node-b")}
    async with listening(lambda: current["tls"]) as b:
        pull, _, link = await linked(b, pki.node("node-a"))
        rotated = pki.node("node-b")
        current["tls"] = TLSMaterial(
            root_pem=pki.root_pem + ClusterPKI(CLUSTER).root_pem,
            cert_pem=rotated.cert_pem,
            key_pem=rotated.key_pem,
        )
        assert not b.server.send(link, b"after the rotation")
        await asyncio.wait_for(pull, 10)
        # A new link is admitted under the new trust (the old root is still in the bundle).
        pull, frames, link = await linked(b, pki.node("node-a"), "a new link")
        assert b.server.send(link, b"again")
        await until(lambda: frames == [b"again"], "the message on the new link")
        pull.cancel()


async def test_the_puller_refuses_a_listener_that_is_not_the_manager_it_expects() -> None:
    pki = ClusterPKI(CLUSTER)
    for impostor in (pki.node("node-x"), pki.node("node-b", "swarm-worker")):
        async with listening(impostor) as b:
            pull, frames = start_pull(b, pki.node("node-a"), expect="node-b")
            with pytest.raises(LinkRefused):
                await asyncio.wait_for(pull, 10)
            assert not frames


async def test_the_listener_needs_a_client_certificate() -> None:
    pki = ClusterPKI(CLUSTER)
    async with listening(pki.node("node-b")) as b:
        host, _, port = b.addr.rpartition(":")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cadata=pki.root_pem.decode())
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
        writer.write(b"\x08\x00\x00\x00" + A_MEMBER.to_bytes(8, "little"))
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            data = await asyncio.wait_for(reader.read(1), 10)
            if not data:
                raise ConnectionError("closed")
        writer.close()
        assert not b.links and not b.checks
