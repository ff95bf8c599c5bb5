"""Carries the store provider's replication traffic between managers over the transport.

The provider only sees ``send(member_id, data)`` and ``receive(data)``. This module maps member
IDs to manager addresses (from the managers' node objects, plus hints from a join) and moves
the provider's messages two ways:

- **Pull streams**, the fast path. Every manager holds one long-lived ``StorePull`` stream open
  to each peer it talks to; the peer writes what its provider sends this manager on it. One
  message on an open stream costs about half the CPU and half the time of a unary call (no new
  HTTP/2 stream, headers or status per message), which is most of a commit's cost between
  Python processes. Streams are opened on demand: sending to a peer, or being called by it,
  starts pulling from it.
- **StoreStep** unary calls, the fallback: while a peer has no stream open to us (it is starting,
  restarting or unreachable), one sender task per peer batches everything queued for it into
  a single call, and the peer's answers to that call ride back in its response.

Who may call both methods is decided by ``rpc.guard`` (``Access.STORE_PEER``): manager
certificates of this cluster whose node is not on the removed list nor recorded as demoted, so a
manager removed from the group (``node demote``, ``--force-new-cluster``) learns it must leave
and join again instead of disrupting it, while a replica that lags never turns away a member
that just joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

from shoal import rpc
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.store import StoreProvider
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode, TLSMaterial, TransportProvider
from shoal.store.memory import ObjectStore

log = logging.getLogger("shoal.manager.storenet")

#: Per-RPC deadline: a peer that does not answer in this time is treated as unreachable (the
#: store protocol retries), so one dead manager never stalls the queue to the others.
STEP_TIMEOUT = 2.0
#: RPCs in flight to one peer at once (HTTP/2 keeps them in order on the connection).
MAX_IN_FLIGHT = 4
#: Pause after a failed delivery before trying that peer again (it is down or partitioned).
RETRY_PAUSE = 0.1
#: Longest pause between attempts to reopen a pull stream (doubling from ``RETRY_PAUSE``);
#: meanwhile the peer's messages still arrive by ``StoreStep``, so nothing waits on it.
MAX_PULL_PAUSE = 1.0
#: Batches queued for one peer beyond this are dropped oldest-first: a stalled peer must not
#: grow memory without bound (the protocol resends what it still needs).
MAX_QUEUED = 4096

REMOVED_MESSAGE = rpc.REMOVED_MESSAGE
#: Answers that tell a manager the others no longer count it as a member.
_REFUSED_CODES = (StatusCode.PERMISSION_DENIED, StatusCode.FAILED_PRECONDITION)


def _append_bounded(batches: list[bytes], data: bytes) -> None:
    """Queue ``data``, dropping the oldest beyond ``MAX_QUEUED``."""
    batches.append(data)
    if len(batches) > MAX_QUEUED:
        del batches[: len(batches) - MAX_QUEUED]


class _Outlet:
    """A pull stream a peer holds open to this manager: what the provider sends that peer is
    written on it, everything queued since the last write in one message."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []
        self.ready = asyncio.Event()
        self.closed = False

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
        #: When a delivery to the peer last succeeded or something last arrived from it.
        self.last_ok = 0.0
        self.removed = False
        self.addr = ""


class StoreNetwork:
    """The manager's half of store replication (see the module docstring)."""

    def __init__(
        self,
        *,
        provider: StoreProvider,
        store: ObjectStore,
        transport: TransportProvider,
        tls: Callable[[], TLSMaterial],
        cluster_id: str,
        advertise_addr: str,
        peers_file: Path,
        on_removed: Callable[[str], None],
    ) -> None:
        self.provider = provider
        self.store = store
        self.transport = transport
        self.tls = tls
        self.cluster_id = cluster_id
        self.advertise_addr = advertise_addr
        self.peers_file = peers_file
        self.on_removed = on_removed
        self._hints: dict[int, str] = self._load_hints()
        self._peers: dict[int, _Peer] = {}
        self._closed = False
        #: Per sender of a step being handled: what the provider sends back meanwhile. It
        #: travels in the step's response, saving the follower a call of its own per commit.
        self._replies: dict[int, list[bytes]] = {}

    # ------------------------------------------------------------------ addresses

    def _load_hints(self) -> dict[int, str]:
        try:
            doc = json.loads(self.peers_file.read_text())
            return {int(k): str(v) for k, v in doc.items()}
        except FileNotFoundError:
            return {}
        except (ValueError, AttributeError) as exc:
            log.warning("ignoring unreadable %s: %s", self.peers_file, exc)
            return {}

    def learn(self, member_id: int, addr: str) -> None:
        """Remember where a member listens (persisted: a restart may need it before the store
        has replayed the node objects that also say so)."""
        if not member_id or not addr or self._hints.get(member_id) == addr:
            return
        self._hints[member_id] = addr
        tmp = self.peers_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in self._hints.items()}))
        tmp.replace(self.peers_file)

    def address(self, member_id: int) -> str:
        for node in self.store.view.nodes.all():
            status = node.manager_status
            if status.raft_id == member_id and status.addr:
                return status.addr
        return self._hints.get(member_id, "")

    def node_of(self, member_id: int) -> pb.Node | None:
        for node in self.store.view.nodes.all():
            if node.manager_status.raft_id == member_id:
                return node
        return None

    def members(self) -> list[rpb.StoreMember]:
        """Every known member with its address and node (for a joining manager)."""
        result = []
        for info in self.provider.members():
            node = self.node_of(info.member_id)
            result.append(
                rpb.StoreMember(
                    member_id=info.member_id,
                    addr=self.address(info.member_id),
                    node_id=node.id if node is not None else "",
                )
            )
        return result

    def reachable(self, member_id: int, within: float) -> bool:
        """Whether a delivery to ``member_id`` succeeded, or something arrived from it, in the
        last ``within`` seconds."""
        peer = self._peers.get(member_id)
        return peer is not None and asyncio.get_running_loop().time() - peer.last_ok < within

    # ------------------------------------------------------------------ sending

    def send(self, member_id: int, data: bytes) -> None:
        """The provider's ``SendFunc``: queue and wake that peer's sender (or, while a step
        from that peer is being handled, return it in that step's answer)."""
        if self._closed:
            return
        captured = self._replies.get(member_id)
        if captured is not None:
            captured.append(data)
            return
        peer = self._peer(member_id)
        if peer.outlet is not None:
            peer.outlet.put(data)
            return
        if peer.task is None:
            peer.task = asyncio.get_running_loop().create_task(
                self._sender(peer), name=f"store-send-{member_id:x}"
            )
        _append_bounded(peer.queue, data)
        peer.wakeup.set()

    def _peer(self, member_id: int) -> _Peer:
        """The state kept for a peer; the first contact either way starts pulling from it."""
        peer = self._peers.get(member_id)
        if peer is None:
            peer = self._peers[member_id] = _Peer(member_id)
        if peer.puller is None and not peer.removed and not self._closed:
            peer.puller = asyncio.get_running_loop().create_task(
                self._pull(peer), name=f"store-pull-{member_id:x}"
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
                # Resolved once per peer (a scan of the node objects), again after a failure.
                addr = peer.addr = peer.addr or self.address(peer.member_id)
                if not addr:
                    window.release()
                    log.debug(
                        "no address for store member %x; dropped %d batch(es)", peer.member_id, len(batches)
                    )
                    self.provider.report_unreachable(peer.member_id)
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                request = rpb.StoreStepRequest(
                    from_member=self.provider.member_id,
                    to_member=peer.member_id,
                    batches=batches,
                    from_addr=self.advertise_addr,
                ).SerializeToString()
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
            raw = await self.transport.call(
                addr, rpc.STORE_STEP, request, tls=self.tls(), timeout=STEP_TIMEOUT
            )
            peer.last_ok = asyncio.get_running_loop().time()
            if raw and not self._closed:
                self._feed(rpb.StoreStepResponse.FromString(raw).batches)
        except RPCError as exc:
            if self._told_removed(peer, exc):
                return
            peer.addr = ""  # it may have moved (a new advertise address): look it up again
            log.debug("store step to %x at %s failed: %s", peer.member_id, addr, exc.message)
            self.provider.report_unreachable(peer.member_id)
            await asyncio.sleep(RETRY_PAUSE)  # hold the window: do not hammer a peer that is down
        finally:
            window.release()

    async def _pull(self, peer: _Peer) -> None:
        """Hold a pull stream open to ``peer`` and hand what arrives on it to the provider;
        reopen it (after a pause, doubling up to ``MAX_PULL_PAUSE``) when it ends."""
        pause = RETRY_PAUSE
        loop = asyncio.get_running_loop()
        try:
            while not self._closed and not peer.removed:
                addr = peer.addr = peer.addr or self.address(peer.member_id)
                if addr:
                    tls = self.tls()
                    request = rpb.StoreStepRequest(
                        from_member=self.provider.member_id,
                        to_member=peer.member_id,
                        from_addr=self.advertise_addr,
                    ).SerializeToString()
                    messages = self.transport.stream(addr, rpc.STORE_PULL, request, tls=tls)
                    try:
                        async for raw in messages:
                            peer.last_ok = loop.time()
                            pause = RETRY_PAUSE
                            self._feed(rpb.StoreStepRequest.FromString(raw).batches)
                            if self.tls() is not tls:  # renewed: present the new certificate
                                break
                    except RPCError as exc:
                        if self._told_removed(peer, exc):
                            return
                        peer.addr = ""
                        log.debug("store pull from %x at %s ended: %s", peer.member_id, addr, exc.message)
                    finally:
                        aclose = getattr(messages, "aclose", None)
                        if aclose is not None:  # a break leaves the call open until then
                            await aclose()
                if self._closed or not self._is_member(peer.member_id):
                    return  # restarted by the next message to or from it
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PULL_PAUSE)
        finally:
            peer.puller = None

    def _told_removed(self, peer: _Peer, exc: RPCError) -> bool:
        """Whether ``peer`` answered that this manager is no longer a member (then it stops
        talking to it and tells the daemon)."""
        if exc.code not in _REFUSED_CODES or "no longer a member" not in exc.message:
            return False
        peer.removed = True
        self.on_removed(exc.message)
        return True

    def _feed(self, batches: Iterable[bytes]) -> None:
        for batch in batches:
            self.provider.receive(batch)

    def _is_member(self, member_id: int) -> bool:
        return any(info.member_id == member_id for info in self.provider.members())

    async def close(self) -> None:
        self._closed = True
        for peer in self._peers.values():
            if peer.outlet is not None:
                peer.outlet.close()
        tasks = [t for p in self._peers.values() for t in (p.task, p.puller) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._peers.clear()

    # ------------------------------------------------------------------ receiving

    def _admit(self, request: bytes) -> rpb.StoreStepRequest:
        """Checks shared by ``StoreStep`` and ``StorePull`` (the caller was authorised by
        ``rpc.guard``): a well-formed request addressing the member that lives here."""
        try:
            step = rpb.StoreStepRequest.FromString(request)
        except Exception:
            raise RPCError(StatusCode.INVALID_ARGUMENT, "malformed store step request") from None
        if step.to_member and step.to_member != self.provider.member_id:
            raise RPCError(
                StatusCode.FAILED_PRECONDITION,
                f"store member {step.to_member:x} does not live here (this is {self.provider.member_id:x})",
            )
        if step.from_addr and not self.address(step.from_member):
            self.learn(step.from_member, step.from_addr)
        return step

    async def handle_pull(self, request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        """``StorePull``: stream what the provider sends the caller until it hangs up (or a
        newer stream from it replaces this one). ``rpc.guard`` checks the caller again before
        each message, so a manager demoted meanwhile loses the stream at the next one."""
        step = self._admit(request)
        if not step.from_member:
            raise RPCError(StatusCode.INVALID_ARGUMENT, "a store pull needs the caller's member ID")
        state = self._peer(step.from_member)
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
                yield rpb.StoreStepRequest(
                    from_member=self.provider.member_id, to_member=step.from_member, batches=batches
                ).SerializeToString()
        finally:
            if state.outlet is outlet:
                state.outlet = None
                if not self._closed and outlet.batches:
                    self.provider.report_unreachable(step.from_member)  # those are lost

    async def handle_step(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        """``StoreStep``: managers of this cluster that are still members only (``rpc.guard``)."""
        step = self._admit(request)
        self._peer(step.from_member).last_ok = asyncio.get_running_loop().time()
        if step.from_member in self._replies:  # another step from it in flight: no capture
            self._feed(step.batches)
            return b""
        replies = self._replies[step.from_member] = []
        try:
            self._feed(step.batches)
            # The provider handles what it received in a callback it scheduled just now: let it
            # run (persist, answer) so its answer rides back in this response.
            await asyncio.sleep(0)
        finally:
            del self._replies[step.from_member]
        return rpb.StoreStepResponse(batches=replies).SerializeToString()
