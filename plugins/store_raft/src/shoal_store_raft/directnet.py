"""A direct mutual-TLS connection per peer for the Raft store's messages, beside gRPC.

Why: a commit needs the leader's append to reach a follower and the follower's acknowledgement
to come back. Over gRPC each of those two hops costs ~235 us on this machine class: the sender
waits a loop turn for its stream's generator to resume, and on receipt gRPC's poller thread
wakes, then the event loop. That made one write through shoal's leader 10-27 % slower than
etcd's (docs/benchmarks.md, 2026-12-07, "one Raft write"). On a plain TLS connection the sender
writes in the Ready that sends the message and the receiver reads it in the loop's own
callback: ~120-150 us per hop.

How (``PeerNetwork`` drives it; gRPC stays the fallback and carries everything until a link is
up, and whatever a link will not take):

1. Member A asks member B over gRPC (``RaftDirect``, a store-peer method the kernel guards)
   where B's direct listener is; B answers with its address (empty: B has none).
2. A connects there with TLS, presenting its node certificate, and checks B's: it must chain
   to the swarm's root and name B's node as a manager of this swarm. A then sends a hello:
   its member ID.
3. B requires a client certificate chained to the swarm's root (only the root: not the
   anonymous CA that lets nodes without a certificate join), reads the caller's node ID from
   it, and admits the link only if the kernel would serve a store-peer method to that
   certificate now (``authorize``) and its member book names that node for the member ID of
   the hello.
4. From then on B writes what its Raft sends A on the link, one length-prefixed envelope
   (``wire``) per message. Before **every** message B asks the kernel again, and checks the
   certificate's expiry and that the swarm's root is the one the link was admitted under: a
   manager demoted or removed meanwhile loses the link at the next message, exactly as it
   loses a gRPC stream. Nothing flows from A to B after the hello; A's messages to B go on
   the link B opens to A.

A link closes (and the peer's messages go by gRPC again) when: the kernel refuses the peer,
its certificate expires, the root changes, the peer stops reading (more than ``MAX_BUFFERED``
waiting), either side closes. A message larger than ``MAX_FRAME`` (a snapshot) goes by gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from shoal import identity
from shoal.plugin import PeerIdentity, RPCError, TLSMaterial

log = logging.getLogger("shoal.store.raft.direct")

#: Frame header: the payload's length.
_LEN = struct.Struct("<I")
#: The hello's payload: the caller's member ID.
_HELLO = struct.Struct("<Q")
#: Largest message a link carries; a larger one (a snapshot) goes by gRPC, so a link's reader
#: never buffers more than this for one frame.
MAX_FRAME = 4 << 20
#: A peer that leaves more than this unread loses its link (its messages then queue, bounded,
#: for the gRPC stream).
MAX_BUFFERED = 32 << 20
#: The TLS handshake and the hello must each complete within this long.
HANDSHAKE_TIMEOUT = 10.0


#: Where ``_candidate_ports`` draws from when the system's ephemeral range cannot be read.
_EPHEMERAL_LOW = 32768
_LOWEST_PORT = 10000


def _candidate_ports(tries: int = 64) -> list[int]:
    """Ports to try for a listener on "any free port": random ones below the system's
    ephemeral range, then 0. A port the kernel picks (0) is one it may also hand to any other
    program asking for a free port meanwhile, such as a test harness that picked the ports of
    daemons it has yet to start, or an outgoing connection; below the range it hands out none."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low = int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = _EPHEMERAL_LOW
    if low <= _LOWEST_PORT + tries:
        return [0]
    return [random.randrange(_LOWEST_PORT, low) for _ in range(tries)] + [0]


class LinkRefused(Exception):
    """A connection that must not become a link (the message says why)."""


class NotYetKnown(LinkRefused):
    """A hello for a member this one has not heard of yet: a manager just added, whose link is
    refused until the member book names it (the caller tries again; nothing is wrong)."""


def _load_identity(context: ssl.SSLContext, material: TLSMaterial) -> None:
    """Load the node's certificate and key from memory: Python's ``ssl`` reads them only from
    files, and the key must not touch the disk unsealed, so they go through anonymous
    in-memory files (``memfd``) that vanish when closed."""
    fds = [os.memfd_create("shoal-raft-cert"), os.memfd_create("shoal-raft-key")]
    try:
        for fd, data in zip(fds, (material.cert_pem, material.key_pem), strict=True):
            os.write(fd, data)
        context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    finally:
        for fd in fds:
            os.close(fd)


def _context(material: TLSMaterial, *, server: bool) -> ssl.SSLContext:
    """Mutual TLS trusting only the swarm's root (a bundle during a root rotation)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, material)
    context.load_verify_locations(cadata=material.root_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED
    if not server:
        context.check_hostname = False  # node certificates name nodes, not addresses: checked below
    return context


def peer_certificate(transport: asyncio.BaseTransport) -> tuple[PeerIdentity, float]:
    """The identity and expiry (UNIX time) of the certificate the TLS peer presented (the
    handshake verified its chain to the root)."""
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise LinkRefused("no peer certificate")
    cert = x509.load_der_x509_certificate(der)
    try:
        peer = identity.parse_identity(cert)
    except identity.CertificateError as exc:
        raise LinkRefused(f"peer certificate names no node: {exc}") from None
    return peer, cert.not_valid_after_utc.timestamp()


class TLSContexts:
    """The TLS contexts of the node's current material, rebuilt when it changes (renewal,
    root rotation); building one costs ~1 ms, so not per connection."""

    def __init__(self, tls: Callable[[], TLSMaterial]) -> None:
        self.tls = tls
        self._built: tuple[TLSMaterial, ssl.SSLContext, ssl.SSLContext] | None = None

    def current(self) -> tuple[TLSMaterial, ssl.SSLContext, ssl.SSLContext]:
        material = self.tls()
        built = self._built
        if built is None or built[0] is not material:
            built = self._built = (
                material,
                _context(material, server=True),
                _context(material, server=False),
            )
        return built


@dataclass
class Link:
    """B's end of a link: where what B's Raft sends member A is written."""

    member_id: int
    peer: PeerIdentity
    not_after: float
    root_pem: bytes
    writer: asyncio.StreamWriter
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


class DirectServer:
    """B's listener: admits links (steps 3 and 4 of the module docstring)."""

    def __init__(
        self,
        *,
        contexts: TLSContexts,
        authorize: Callable[[PeerIdentity], None],
        node_of: Callable[[int], str],
        on_link: Callable[[Link], None],
        on_unlink: Callable[[Link], None],
    ) -> None:
        self.contexts = contexts
        self.authorize = authorize
        self.node_of = node_of
        self.on_link = on_link
        self.on_unlink = on_unlink
        self._server: asyncio.Server | None = None
        #: The connections being served, by the task serving each.
        self._handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port below the system's ephemeral range, see
        ``_candidate_ports``); returns the port."""
        for candidate in _candidate_ports() if port == 0 else [port]:
            try:
                self._server = await asyncio.start_server(self._accept, host, candidate, reuse_address=True)
            except OSError as exc:
                if port != 0 or exc.errno != errno.EADDRINUSE:
                    raise
                continue
            return int(self._server.sockets[0].getsockname()[1])
        raise OSError(errno.EADDRINUSE, "no free port below the ephemeral range")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = writer
        link: Link | None = None
        try:
            link = await self._admit(reader, writer)
            log.info(
                "raft store: direct link from node %s (raft member %x) admitted",
                link.peer.node_id,
                link.member_id,
            )
            self.on_link(link)
            # Nothing more comes from the caller: this returns when it hangs up (or breaks the
            # protocol by sending something).
            await reader.read(1)
        except NotYetKnown as exc:
            log.info("raft store: no direct link from %s yet: %s", _where(writer), exc)
        except (LinkRefused, RPCError) as exc:
            log.warning("raft store: refused a direct link from %s: %s", _where(writer), _reason(exc))
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError) as exc:
            log.debug("raft store: direct link from %s ended: %s", _where(writer), exc)
        finally:
            self._handlers.pop(task, None)
            if link is not None:
                link.close()
                self.on_unlink(link)
            writer.close()

    async def _admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Link:
        material, server_context, _ = self.contexts.current()
        await writer.start_tls(server_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        peer, not_after = peer_certificate(writer.transport)
        self.authorize(peer)  # raises RPCError naming why
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that arrives as the read completes, and ``close`` waits for this task to end.
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            header = await reader.readexactly(_LEN.size + _HELLO.size)
        size = _LEN.unpack_from(header)[0]
        if size != _HELLO.size:
            raise LinkRefused(f"node {peer.node_id} sent no hello")
        member_id = _HELLO.unpack_from(header, _LEN.size)[0]
        named = self.node_of(member_id)
        if not named:
            raise NotYetKnown(
                f"node {peer.node_id} is raft member {member_id:x}, not in this member's book yet"
            )
        if named != peer.node_id:
            raise LinkRefused(
                f"node {peer.node_id} claimed raft member {member_id:x}, which this member's book "
                f"names {named}"
            )
        return Link(member_id, peer, not_after, material.root_pem, writer)

    def send(self, link: Link, body: bytes) -> bool:
        """Write one message on ``link`` if the peer may still have it; ``False`` (and the link
        closed) when it may not, or the link is gone: the caller sends it by gRPC instead."""
        if link.closed or link.writer.is_closing():
            return False
        try:
            self.authorize(link.peer)
        except RPCError as exc:
            log.info("raft store: closed the direct link of node %s: %s", link.peer.node_id, exc.message)
            return self._drop(link)
        if time.time() > link.not_after:
            return self._drop(link)
        root = self.contexts.tls().root_pem
        if root is not link.root_pem and root != link.root_pem:
            return self._drop(link)  # a rotation: re-admit under the new root
        transport = link.writer.transport
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            log.info("raft store: closed the direct link of node %s: it stopped reading", link.peer.node_id)
            return self._drop(link)
        transport.write(_LEN.pack(len(body)) + body)
        return True

    def _drop(self, link: Link) -> bool:
        link.close()
        self.on_unlink(link)
        return False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Their connections are closed, not their tasks cancelled: each then ends on its own
        # (a read returns nothing, a handshake fails). Python 3.11's streams log a cancelled
        # connection handler as an error ("Exception in callback ...").
        for writer in list(self._handlers.values()):
            writer.close()
        tasks = list(self._handlers)
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=2.0)
            for task in stuck:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()


class _Frames(asyncio.Protocol):
    """A's end: splits what arrives into frames and hands each to ``on_frame`` in the loop's
    own read callback (no task wake-up per message)."""

    def __init__(self, on_frame: Callable[[bytes], None], ended: asyncio.Future[None]) -> None:
        self.buffer = bytearray()
        self.on_frame = on_frame
        self.ended = ended
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= _LEN.size:
            size = _LEN.unpack_from(buffer)[0]
            if size > MAX_FRAME + 65536:
                self._fail(LinkRefused(f"a frame of {size} bytes (at most {MAX_FRAME} expected)"))
                return
            end = _LEN.size + size
            if len(buffer) < end:
                break
            frame = bytes(buffer[_LEN.size : end])
            del buffer[:end]
            self.on_frame(frame)
            if self.transport is None or self.transport.is_closing():
                return

    def _fail(self, exc: Exception) -> None:
        if not self.ended.done():
            self.ended.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


async def pull(
    addr: str,
    *,
    contexts: TLSContexts,
    member_id: int,
    expect_node: str,
    on_frame: Callable[[bytes], None],
) -> None:
    """A's end of one link to the member B listening at ``addr`` (steps 2 and 4): connect,
    check that B's certificate names ``expect_node`` as a manager of this swarm, say hello,
    then hand every message to ``on_frame`` until the link ends. Returns when it ends (or the
    node's TLS material changed: the next link presents the new certificate); raises
    ``LinkRefused``/``OSError`` when it cannot be set up."""
    loop = asyncio.get_running_loop()
    material, _, client_context = contexts.current()
    own = identity.parse_identity(material.cert_pem)
    host, _, port = addr.rpartition(":")
    ended: asyncio.Future[None] = loop.create_future()

    def take(frame: bytes) -> None:
        if contexts.tls() is not material:  # renewed: reconnect with the new certificate
            transport.close()
            return
        on_frame(frame)

    async with asyncio.timeout(HANDSHAKE_TIMEOUT * 2):  # not wait_for: see ``DirectServer._admit``
        transport, _ = await loop.create_connection(
            lambda: _Frames(take, ended),
            host.strip("[]"),
            int(port),
            ssl=client_context,
            server_hostname="",
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
    try:
        peer, _ = peer_certificate(transport)
        if peer.cluster_id != own.cluster_id or peer.role != own.role or peer.node_id != expect_node:
            raise LinkRefused(
                f"the direct listener at {addr} presented node {peer.node_id} ({peer.role}, cluster "
                f"{peer.cluster_id}), not manager {expect_node} of this swarm"
            )
        transport.write(_LEN.pack(_HELLO.size) + _HELLO.pack(member_id))
        await ended
    finally:
        transport.close()


def _where(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, RPCError) else str(exc)
