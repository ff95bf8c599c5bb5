"""Carries the Raft store's messages between managers over the node's transport.

Raft's core only sees ``send(member_id, data)`` and ``receive(data)``. This module maps member
IDs to manager addresses (``PeerBook``) and moves the messages two ways:

- **Pull streams**, the fast path. Every member holds one long-lived ``RaftPull`` stream open
  to each peer it talks to; the peer writes what its Raft sends this member on it. One message
  on an open stream costs about half the CPU and half the time of a unary call (no new HTTP/2
  stream, headers or status per message), which is most of a commit's cost between Python
  processes. Streams are opened on demand: sending to a peer, or being called by it, starts
  pulling from it.
- **RaftStep** unary calls, the fallback: while a peer has no stream open to us (it is starting,
  restarting or unreachable), one sender task per peer batches everything queued for it into
  a single call, and the peer's answers to that call ride back in its response.

A third method, ``RaftHello``, is how the leader learns the member ID of a manager it adds:
the new member answers with its ID and takes the leader's member book in exchange.

- **Direct links**, faster still (``directnet``): where the kernel gives the store its check of
  a peer (``authorize``), each member also listens for mutual-TLS connections of its own and
  tells a peer where by a fourth method, ``RaftDirect``; the peer then connects there instead of
  waiting on its pull stream, and what Raft sends it is written on that link in the Ready that
  sends it, the kernel's check repeated before every message. Pull streams stay open beside
  the links and carry what a link will not (none up yet, a snapshot, a link closed).

The kernel serves these methods (names under ``STORE_PEER_METHOD_PREFIX``) only to manager
certificates of this cluster whose node it does not record as demoted or removed, so a
manager removed from the group (``node demote``, ``--force-new-cluster``) is told it is "no
longer a member" and learns it must leave and join again (``on_removed``), while a replica
that lags never turns away a member that just joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Protocol

from shoal.plugin import (
    STORE_PEER_METHOD_PREFIX,
    Handler,
    PeerIdentity,
    RPCError,
    StatusCode,
    StreamHandler,
    TLSMaterial,
    TransportProvider,
)

from shoal_store_raft import directnet, wire
from shoal_store_raft.directnet import DirectServer, Link, LinkRefused, TLSContexts
from shoal_store_raft.peers import PeerBook
from shoal_store_raft.wire import Envelope, WireError

log = logging.getLogger("shoal.store.raft.net")

RAFT_STEP = STORE_PEER_METHOD_PREFIX + "RaftStep"
RAFT_PULL = STORE_PEER_METHOD_PREFIX + "RaftPull"
RAFT_HELLO = STORE_PEER_METHOD_PREFIX + "RaftHello"
RAFT_DIRECT = STORE_PEER_METHOD_PREFIX + "RaftDirect"

#: Per-RPC deadline: a peer that does not answer in this time is treated as unreachable (the
#: protocol retries), so one dead manager never stalls the queue to the others.
STEP_TIMEOUT = 2.0
#: RPCs in flight to one peer at once (HTTP/2 keeps them in order on the connection).
MAX_IN_FLIGHT = 4
#: Pause after a failed delivery before trying that peer again (it is down or partitioned).
RETRY_PAUSE = 0.1
#: Longest pause between attempts to reopen a pull stream (doubling from ``RETRY_PAUSE``);
#: meanwhile the peer's messages still arrive by ``RaftStep``, so nothing waits on it.
MAX_PULL_PAUSE = 1.0
#: Longest pause between attempts to set up a direct link to a peer (doubling from
#: ``RETRY_PAUSE``); a peer without a listener (an older version, one that cannot bind) is asked
#: again after ``NO_LISTENER_PAUSE``.
MAX_DIRECT_PAUSE = 5.0
NO_LISTENER_PAUSE = 30.0
#: A link that stayed up this long resets the pause (it was not failing at once).
DIRECT_SETTLED = 2.0
#: Batches queued for one peer beyond this are dropped oldest-first: a stalled peer must not
#: grow memory without bound (the protocol resends what it still needs).
MAX_QUEUED = 4096

#: Answers that tell a manager the others no longer count it as a member.
_REFUSED_CODES = (StatusCode.PERMISSION_DENIED, StatusCode.FAILED_PRECONDITION)
_REFUSED_TEXT = "no longer a member"


class Replica(Protocol):
    """What the network needs of the local Raft member (``RaftStore``)."""

    @property
    def member_id(self) -> int: ...

    def receive(self, data: bytes) -> None: ...

    def report_unreachable(self, member_id: int) -> None: ...

    def is_member(self, member_id: int) -> bool: ...


def _append_bounded(batches: list[bytes], data: bytes) -> None:
    """Queue ``data``, dropping the oldest beyond ``MAX_QUEUED``."""
    batches.append(data)
    if len(batches) > MAX_QUEUED:
        del batches[: len(batches) - MAX_QUEUED]


class _Attempt(enum.Enum):
    """How one attempt at a direct link ended (``PeerNetwork._link_once``)."""

    #: The peer serves no listener (or predates them): ask again after ``NO_LISTENER_PAUSE``.
    NO_LISTENER = enum.auto()
    #: A link was up longer than ``DIRECT_SETTLED``: it was not failing at once.
    HELD = enum.auto()
    FAILED = enum.auto()


class _Outlet:
    """A pull stream a peer holds open to this member: what Raft sends that peer is written on
    it, everything queued since the last write in one message."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []
        self.ready = asyncio.Event()
        self.closed = False
        #: The member book version last passed on this stream.
        self.book_version = -1

    def put(self, data: bytes) -> None:
        _append_bounded(self.batches, data)
        self.ready.set()

    def take_over(self, batches: list[bytes]) -> None:
        """Send what was waiting elsewhere first (an older stream, the fallback queue), and
        empty that list."""
        for data in batches:
            self.put(data)
        batches.clear()

    def close(self) -> None:
        self.closed = True
        self.ready.set()


class _Peer:
    def __init__(self, member_id: int) -> None:
        self.member_id = member_id
        #: Unary fallback: batches waiting for the sender task.
        self.queue: list[bytes] = []
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: The stream the peer pulls from us on, while it has one open.
        self.outlet: _Outlet | None = None
        #: Our stream pulling from the peer.
        self.puller: asyncio.Task[None] | None = None
        #: The direct link the peer holds open to us (we write on it), and ours to it (we read).
        self.link: Link | None = None
        self.direct: asyncio.Task[None] | None = None
        #: Whether our link to the peer carried a message since it was last set up.
        self.direct_up = False
        #: The member book version last passed on ``link``.
        self.link_book_version = -1
        #: When a delivery to the peer last succeeded or something last arrived from it.
        self.last_ok = 0.0
        self.removed = False
        self.addr = ""


class PeerNetwork:
    """One Raft member's half of replication (see the module docstring)."""

    def __init__(
        self,
        *,
        replica: Replica,
        book: PeerBook,
        transport: TransportProvider,
        tls: Callable[[], TLSMaterial],
        node_id: str,
        advertise_addr: str,
        on_removed: Callable[[str], None],
        authorize: Callable[[str, PeerIdentity | None], None] | None = None,
    ) -> None:
        self.replica = replica
        self.book = book
        self.transport = transport
        self.tls = tls
        self.node_id = node_id
        self.advertise_addr = advertise_addr
        self.on_removed = on_removed
        self._peers: dict[int, _Peer] = {}
        self._closed = False
        #: Per sender of a step being handled: what Raft sends back meanwhile. It travels in
        #: the step's response, saving the follower a call of its own per commit.
        self._replies: dict[int, list[bytes]] = {}
        #: The kernel's check of a peer, without which no direct link is served or opened.
        self.authorize = authorize
        self._contexts = TLSContexts(tls)
        self._direct_server: DirectServer | None = None
        #: Where our direct listener is reached (``host:port``), empty while there is none.
        self.direct_addr = ""

    async def start_direct(self, port: int) -> None:
        """Listen for direct links on the advertise address's host and ``port`` (0: any free
        port). Without the kernel's check, or when the host cannot be bound (an advertise
        address that is not this machine's, behind NAT), replication stays on gRPC."""
        if self.authorize is None or self._closed:
            return
        check = self.authorize
        host = self.advertise_addr.rpartition(":")[0]
        server = DirectServer(
            contexts=self._contexts,
            authorize=lambda peer: check(RAFT_DIRECT, peer),
            node_of=self._node_of,
            on_link=self._linked,
            on_unlink=self._unlinked,
        )
        try:
            bound = await server.start(host.strip("[]"), port)
        except OSError as exc:
            log.warning(
                "raft store: no direct replication links (cannot listen on %s:%d: %s); replication "
                "goes over gRPC. Choose a free --plugin-opt store.direct-port, or set "
                "store.direct-links=0 where the advertise address is not this machine's",
                host,
                port,
                exc.strerror or exc,
            )
            return
        self._direct_server = server
        self.direct_addr = f"{host}:{bound}"

    def link_status(self) -> dict[str, object]:
        """What ``shoal info`` shows of the direct links (``Store.direct_links``): where this
        member listens, the peers it writes to on a link and those it reads from on one (an
        operator checks a firewall with it: empty lists mean replication runs over gRPC)."""
        peers = sorted(self._peers.values(), key=lambda p: p.member_id)
        return {
            "listener": self.direct_addr,
            "to": [f"{p.member_id:x}" for p in peers if p.link is not None and not p.link.closed],
            "from": [f"{p.member_id:x}" for p in peers if p.direct_up],
        }

    def _node_of(self, member_id: int) -> str:
        entry = self.book.get(member_id)
        return entry.node_id if entry is not None else ""

    def _linked(self, link: Link) -> None:
        peer = self._peer(link.member_id)
        if peer.link is not None and peer.link is not link:
            peer.link.close()
        peer.link = link
        peer.link_book_version = -1

    def _unlinked(self, link: Link) -> None:
        peer = self._peers.get(link.member_id)
        if peer is not None and peer.link is link:
            peer.link = None

    # ------------------------------------------------------------------ addresses

    def reachable(self, member_id: int, within: float) -> bool:
        """Whether a delivery to ``member_id`` succeeded, or something arrived from it, in the
        last ``within`` seconds."""
        peer = self._peers.get(member_id)
        return peer is not None and asyncio.get_running_loop().time() - peer.last_ok < within

    def _envelope(
        self, to_member: int, batches: list[bytes] | None = None, book: bool = False, names: bool = True
    ) -> Envelope:
        """What we send; ``names=False`` leaves out our node ID and address (a pull stream's
        messages after the first: the peer learnt them already)."""
        return Envelope(
            from_member=self.replica.member_id,
            to_member=to_member,
            from_addr=self.advertise_addr if names else "",
            from_node=self.node_id if names else "",
            peers=self.book.all() if book else [],
            batches=batches or [],
        )

    # ------------------------------------------------------------------ sending

    def send(self, member_id: int, data: bytes) -> None:
        """Raft's send function: queue and wake that peer's sender (or, while a step from that
        peer is being handled, return it in that step's answer)."""
        if self._closed:
            return
        captured = self._replies.get(member_id)
        if captured is not None:
            captured.append(data)
            return
        peer = self._peer(member_id)
        if (
            peer.link is not None
            and len(data) <= directnet.MAX_FRAME
            and self._send_linked(peer, peer.link, data)
        ):
            return
        if peer.outlet is not None:
            peer.outlet.put(data)
            return
        if peer.task is None:
            peer.task = asyncio.get_running_loop().create_task(
                self._sender(peer), name=f"raft-send-{member_id:x}"
            )
        _append_bounded(peer.queue, data)
        peer.wakeup.set()

    def _send_linked(self, peer: _Peer, link: Link, data: bytes) -> bool:
        """Write ``data`` on the peer's direct link (with our member book when it changed since
        the link last carried it); ``False`` when the link refused it (closed, or the kernel
        no longer admits the peer)."""
        server = self._direct_server
        if server is None:
            return False
        book = peer.link_book_version != self.book.version
        body = wire.encode(self._envelope(peer.member_id, [data], book=book, names=book))
        if not server.send(link, body):
            return False
        peer.link_book_version = self.book.version
        return True

    def _peer(self, member_id: int) -> _Peer:
        """The state kept for a peer; the first contact either way starts pulling from it."""
        peer = self._peers.get(member_id)
        if peer is None:
            peer = self._peers[member_id] = _Peer(member_id)
        if peer.puller is None and not peer.removed and not self._closed:
            peer.puller = asyncio.get_running_loop().create_task(
                self._pull(peer), name=f"raft-pull-{member_id:x}"
            )
        if peer.direct is None and self._direct_server is not None and not peer.removed and not self._closed:
            peer.direct = asyncio.get_running_loop().create_task(
                self._pull_direct(peer), name=f"raft-direct-{member_id:x}"
            )
        return peer

    async def _sender(self, peer: _Peer) -> None:
        """Deliver everything queued for one peer, in order, several RPCs in flight at once
        (a commit needs the append out and the acknowledgement back; waiting for each call's
        completion before sending the next would add a round trip per batch)."""
        window = asyncio.Semaphore(MAX_IN_FLIGHT)
        calls: set[asyncio.Task[None]] = set()
        try:
            while not self._closed:
                await peer.wakeup.wait()
                peer.wakeup.clear()
                if peer.outlet is not None:  # the peer opened a stream meanwhile
                    peer.outlet.take_over(peer.queue)
                if not peer.queue:
                    continue
                await window.acquire()
                batches, peer.queue = peer.queue, []
                addr = peer.addr = peer.addr or self.book.address(peer.member_id)
                if not addr:
                    window.release()
                    log.debug(
                        "no address for raft member %x; dropped %d batch(es)", peer.member_id, len(batches)
                    )
                    self.replica.report_unreachable(peer.member_id)
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                request = wire.encode(self._envelope(peer.member_id, batches, book=True))
                call = asyncio.get_running_loop().create_task(self._deliver(peer, addr, request, window))
                calls.add(call)
                call.add_done_callback(calls.discard)
                if peer.removed:
                    return
        finally:
            for call in list(calls):
                call.cancel()

    async def _deliver(self, peer: _Peer, addr: str, request: bytes, window: asyncio.Semaphore) -> None:
        try:
            raw = await self.transport.call(addr, RAFT_STEP, request, tls=self.tls(), timeout=STEP_TIMEOUT)
            peer.last_ok = asyncio.get_running_loop().time()
            if raw and not self._closed:
                self._take(raw)
        except RPCError as exc:
            if self._told_removed(peer, exc):
                return
            peer.addr = ""  # it may have moved (a new advertise address): look it up again
            log.debug("raft step to %x at %s failed: %s", peer.member_id, addr, exc.message)
            self.replica.report_unreachable(peer.member_id)
            await asyncio.sleep(RETRY_PAUSE)  # hold the window: do not hammer a peer that is down
        finally:
            window.release()

    async def _pull(self, peer: _Peer) -> None:
        """Hold a pull stream open to ``peer`` and hand what arrives on it to Raft; reopen it
        (after a pause, doubling up to ``MAX_PULL_PAUSE``) when it ends."""
        pause = RETRY_PAUSE
        loop = asyncio.get_running_loop()
        try:
            while not self._closed and not peer.removed:
                addr = peer.addr = peer.addr or self.book.address(peer.member_id)
                if addr:
                    tls = self.tls()
                    request = wire.encode(self._envelope(peer.member_id, book=True))
                    messages = self.transport.stream(addr, RAFT_PULL, request, tls=tls)
                    try:
                        async for raw in messages:
                            peer.last_ok = loop.time()
                            pause = RETRY_PAUSE
                            self._take(raw)
                            if self.tls() is not tls:  # renewed: present the new certificate
                                break
                    except RPCError as exc:
                        if self._told_removed(peer, exc):
                            return
                        peer.addr = ""
                        log.debug("raft pull from %x at %s ended: %s", peer.member_id, addr, exc.message)
                    finally:
                        aclose = getattr(messages, "aclose", None)
                        if aclose is not None:  # a break leaves the call open until then
                            await aclose()
                if self._closed or not self.replica.is_member(peer.member_id):
                    return  # restarted by the next message to or from it
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PULL_PAUSE)
        finally:
            peer.puller = None

    async def _pull_direct(self, peer: _Peer) -> None:
        """Hold a direct link open to ``peer`` (``directnet``): set it up again after a pause
        when it ends (doubling up to ``MAX_DIRECT_PAUSE``; back to ``RETRY_PAUSE`` after a link
        that held; ``NO_LISTENER_PAUSE`` while the peer serves none). The pull stream carries
        the peer's messages meanwhile, so nothing waits on this."""
        pause = RETRY_PAUSE
        try:
            while not self._closed and not peer.removed:
                addr = peer.addr = peer.addr or self.book.address(peer.member_id)
                outcome = await self._link_once(peer, addr) if addr else _Attempt.FAILED
                peer.direct_up = False
                if self._closed or not self.replica.is_member(peer.member_id):
                    return  # restarted by the next message to or from it
                if outcome is _Attempt.HELD:
                    pause = RETRY_PAUSE
                await asyncio.sleep(NO_LISTENER_PAUSE if outcome is _Attempt.NO_LISTENER else pause)
                pause = min(pause * 2, MAX_DIRECT_PAUSE)
        finally:
            peer.direct = None

    async def _link_once(self, peer: _Peer, addr: str) -> _Attempt:
        """One direct link to ``peer``: ask it where it listens, connect, hand what arrives to
        Raft until the link ends."""
        loop = asyncio.get_running_loop()
        started = loop.time()

        def take(frame: bytes) -> None:
            peer.last_ok = loop.time()
            peer.direct_up = True
            self._take(frame)

        try:
            request = wire.encode(self._envelope(peer.member_id))
            raw = await self.transport.call(addr, RAFT_DIRECT, request, tls=self.tls(), timeout=STEP_TIMEOUT)
            there = wire.decode(raw)
            if not there.from_addr:
                return _Attempt.NO_LISTENER
            known = self.book.get(peer.member_id)
            await directnet.pull(
                there.from_addr,
                contexts=self._contexts,
                member_id=self.replica.member_id,
                expect_node=known.node_id if known is not None else there.from_node,
                on_frame=take,
            )
        except RPCError as exc:
            log.debug("raft store: no direct link to %x: %s", peer.member_id, exc.message)
            if exc.code is StatusCode.UNIMPLEMENTED:  # a version without direct links
                return _Attempt.NO_LISTENER
            return _Attempt.FAILED
        except (LinkRefused, WireError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.debug("raft store: direct link to %x at %s ended: %s", peer.member_id, addr, exc)
            return _Attempt.FAILED
        return _Attempt.HELD if loop.time() - started > DIRECT_SETTLED else _Attempt.FAILED

    def _told_removed(self, peer: _Peer, exc: RPCError) -> bool:
        """Whether ``peer`` answered that this member is no longer one (then it stops talking
        to it and tells the store)."""
        if exc.code not in _REFUSED_CODES or _REFUSED_TEXT not in exc.message:
            return False
        peer.removed = True
        self.on_removed(exc.message)
        return True

    def _take(self, raw: bytes) -> None:
        """Hand an incoming envelope's batches to Raft (and learn what it says of peers)."""
        try:
            env = wire.decode(raw)
        except WireError as exc:
            log.warning("raft store: dropped an undecodable message from a peer: %s", exc)
            return
        self._learn(env)
        self._feed(env.batches)

    def _learn(self, env: Envelope) -> None:
        if env.peers:
            self.book.learn_all(env.peers)
        if env.from_member and env.from_addr:
            self.book.learn(env.from_member, env.from_node, env.from_addr)

    def _feed(self, batches: Iterable[bytes]) -> None:
        for batch in batches:
            self.replica.receive(batch)

    async def hello(self, addr: str, timeout: float = STEP_TIMEOUT) -> Envelope:  # noqa: ASYNC109
        """Ask the member serving at ``addr`` who it is (the leader adding a manager); it takes
        this member's book in exchange."""
        request = wire.encode(self._envelope(0, book=True))
        raw = await self.transport.call(addr, RAFT_HELLO, request, tls=self.tls(), timeout=timeout)
        try:
            env = wire.decode(raw)
        except WireError as exc:
            raise RPCError(StatusCode.INTERNAL, f"the manager at {addr} answered nonsense: {exc}") from None
        if not env.from_member:
            raise RPCError(StatusCode.FAILED_PRECONDITION, f"the manager at {addr} has no raft member yet")
        self._learn(env)
        return env

    async def close(self) -> None:
        self._closed = True
        for peer in self._peers.values():
            if peer.outlet is not None:
                peer.outlet.close()
        if self._direct_server is not None:
            await self._direct_server.close()
        tasks = [t for p in self._peers.values() for t in (p.task, p.puller, p.direct) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._peers.clear()

    # ------------------------------------------------------------------ receiving

    def handlers(self) -> tuple[Mapping[str, Handler], Mapping[str, StreamHandler]]:
        """The methods this member serves (the kernel guards them; see the module docstring)."""
        unary = {RAFT_STEP: self.handle_step, RAFT_HELLO: self.handle_hello, RAFT_DIRECT: self.handle_direct}
        return unary, {RAFT_PULL: self.handle_pull}

    def _admit(self, request: bytes) -> Envelope:
        """Checks shared by every method (the caller was authorised by the kernel): a
        well-formed request addressing the member that lives here."""
        try:
            env = wire.decode(request)
        except WireError:
            raise RPCError(StatusCode.INVALID_ARGUMENT, "malformed raft store request") from None
        own = self.replica.member_id
        if env.to_member and env.to_member != own:
            raise RPCError(
                StatusCode.FAILED_PRECONDITION,
                f"raft member {env.to_member:x} does not live here (this is {own:x})",
            )
        self._learn(env)
        return env

    async def handle_hello(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        """``RaftHello``: say who this member is."""
        self._admit(request)
        return wire.encode(self._envelope(0))

    async def handle_direct(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        """``RaftDirect``: where this member's direct listener is (``from_addr``; empty when it
        has none). The caller's node and address are learnt from the request, so the
        listener can match the hello that follows to the caller's certificate."""
        self._admit(request)
        return wire.encode(
            Envelope(from_member=self.replica.member_id, from_addr=self.direct_addr, from_node=self.node_id)
        )

    async def handle_pull(self, request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        """``RaftPull``: stream what Raft sends the caller until it hangs up (or a newer stream
        from it replaces this one). The kernel checks the caller again before each message, so
        a manager demoted meanwhile loses the stream at the next one."""
        env = self._admit(request)
        if not env.from_member:
            raise RPCError(StatusCode.INVALID_ARGUMENT, "a raft pull needs the caller's member ID")
        state = self._peer(env.from_member)
        outlet = _Outlet()
        if state.outlet is not None:  # a stream it opened before: what that has not sent moves here
            outlet.take_over(state.outlet.batches)
            state.outlet.close()
        outlet.take_over(state.queue)  # waiting for the fallback sender: the stream is quicker
        state.outlet = outlet
        try:
            while not self._closed:
                await outlet.ready.wait()
                outlet.ready.clear()
                if outlet.closed:
                    return
                if not outlet.batches:
                    continue
                batches, outlet.batches = outlet.batches, []
                book = outlet.book_version != self.book.version
                outlet.book_version = self.book.version
                yield wire.encode(self._envelope(env.from_member, batches, book=book, names=book))
        finally:
            if state.outlet is outlet:
                state.outlet = None
                if not self._closed and outlet.batches:
                    self.replica.report_unreachable(env.from_member)  # those are lost

    async def handle_step(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        """``RaftStep``: Raft messages, answered with what Raft sends back meanwhile."""
        env = self._admit(request)
        self._peer(env.from_member).last_ok = asyncio.get_running_loop().time()
        if env.from_member in self._replies:  # another step from it in flight: no capture
            self._feed(env.batches)
            return b""
        replies = self._replies[env.from_member] = []
        try:
            self._feed(env.batches)
            # Raft handles what it received in a callback it scheduled just now: let it run
            # (persist, answer) so its answer rides back in this response.
            await asyncio.sleep(0)
        finally:
            del self._replies[env.from_member]
        return wire.encode(self._envelope(env.from_member, replies))
