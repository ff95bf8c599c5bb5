"""The calling side: connect, handshake, deliver through the simulated wire, wait for the reply.

Order of checks is gRPC's, so failures come out the same: the network (crashed, partitioned,
nothing listening: ``UNAVAILABLE`` "cannot reach HOST:PORT: connection refused ..."), the TLS
handshake (``UNAVAILABLE`` "... TLS handshake failed: ..."), the method (``UNIMPLEMENTED``),
then the handler. Failures before the handler happen without delay. Deadlines are the loop's
clock; when one passes the server-side work is cancelled, as gRPC propagates deadlines.

Faults (see ``network``): each direction of a unary call is delayed and may be dropped (a lost
request or reply surfaces at the caller's deadline as ``DEADLINE_EXCEEDED``), and a request may
be delivered twice. A stream is one ordered connection: its opening may be delayed or dropped
(with no deadline a dropped opening fails ``UNAVAILABLE`` at once rather than hang forever),
each message is delayed, none is lost or duplicated.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from shoal.plugin import Handler, PeerIdentity, RPCError, StatusCode, StreamHandler, TLSMaterial

from shoal_transport_memory.handshake import HandshakeFailure, Handshaker
from shoal_transport_memory.network import Link, MemoryNetwork
from shoal_transport_memory.server import MemoryServer, as_sent, check_message, internal, invoke_unary, log

#: Stream messages buffered between handler and caller before the handler waits (flow control).
STREAM_WINDOW = 8


class _Pipe:
    """One server stream's messages in order, then its end: ``None`` (clean) or an ``RPCError``."""

    def __init__(self, capacity: int = STREAM_WINDOW) -> None:
        self._capacity = capacity
        self._items: deque[bytes] = deque()
        self._finished = False
        self._final: RPCError | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()

    async def put(self, message: bytes) -> None:
        while len(self._items) >= self._capacity and not self._finished:
            self._writable.clear()
            await self._writable.wait()
        if not self._finished:
            self._items.append(message)
            self._readable.set()

    def finish(self, error: RPCError | None, *, discard: bool = False) -> None:
        """End the stream (first call wins); ``discard`` drops what the caller has not read."""
        if self._finished:
            return
        self._finished, self._final = True, error
        if discard:
            self._items.clear()
        self._readable.set()
        self._writable.set()

    async def get(self) -> bytes | RPCError | None:
        while not self._items and not self._finished:
            self._readable.clear()
            await self._readable.wait()
        if self._items:
            self._writable.set()
            return self._items.popleft()
        return self._final


async def _forever() -> None:
    """A message lost on the wire: nothing ever arrives (the caller's deadline ends the wait)."""
    await asyncio.get_running_loop().create_future()


class Caller:
    """Makes calls for one transport: its addresses (for partitions) and its handshake cache."""

    def __init__(
        self, network: MemoryNetwork, handshaker: Handshaker, sources: Callable[[], frozenset[str]]
    ) -> None:
        self.network = network
        self._handshaker = handshaker
        self._sources = sources

    def _connect(
        self, target: str, tls: TLSMaterial, server_name: str = ""
    ) -> tuple[MemoryServer, PeerIdentity | None, frozenset[str]]:
        network = self.network
        network.stats["calls"] += 1
        sources = self._sources()
        reason = network.blocked(sources, target)
        server = network.lookup(target) if reason is None else None
        if reason is None and server is None:
            reason = "connection refused (nothing listens there)"
        if reason is not None or server is None:
            network.stats["refused"] += 1
            raise RPCError(StatusCode.UNAVAILABLE, f"cannot reach {target}: {reason}")
        try:
            peer = self._handshaker.handshake(tls, server.tls, server_name)
        except HandshakeFailure as exc:
            raise RPCError(
                StatusCode.UNAVAILABLE, f"cannot reach {target}: TLS handshake failed: {exc}"
            ) from None
        return server, peer, sources

    def cut_all(self, error: RPCError) -> None:
        """Fail every call this caller has in flight (the transport is closing)."""
        for link in self.network.links(lambda link: link.owner is self):
            link.cut(error)

    # ------------------------------------------------------------------ unary

    async def call(
        self,
        target: str,
        method: str,
        request: bytes,
        tls: TLSMaterial,
        timeout: float | None,  # noqa: ASYNC109
    ) -> bytes:
        data = check_message(method, request, "request is")
        if isinstance(data, RPCError):
            raise data
        server, peer, sources = self._connect(target, tls)
        handler = server.unary_handler(method)
        if handler is None:
            raise RPCError(StatusCode.UNIMPLEMENTED, f"{method}: method not found on {target}")
        outcome: asyncio.Future[bytes | RPCError] = asyncio.get_running_loop().create_future()

        def settle(result: bytes | RPCError) -> None:
            if not outcome.done():
                outcome.set_result(result)

        link = Link(sources, target, server, self, on_cut=settle)
        self.network.open_link(link)
        task = server.spawn(link, self._deliver(link, method, handler, data, peer, settle))
        try:
            done, _ = await asyncio.wait({outcome}, timeout=timeout)
        finally:
            self.network.close_link(link)
            task.cancel()
        if not done:
            raise RPCError(StatusCode.DEADLINE_EXCEEDED, f"{method} on {target} timed out after {timeout}s")
        result = outcome.result()
        if isinstance(result, RPCError):
            raise RPCError(result.code, result.message)
        return result

    async def _deliver(
        self,
        link: Link,
        method: str,
        handler: Handler,
        request: bytes,
        peer: PeerIdentity | None,
        settle: Callable[[bytes | RPCError], None],
    ) -> None:
        network = self.network
        await network.wire_delay()
        if network.draw_drop():
            await _forever()
        if network.draw_duplicate():
            self._duplicate(link, method, handler, request, peer)
        result = await invoke_unary(method, handler, request, peer)
        await network.wire_delay()
        if not network.draw_drop():
            settle(result)

    def _duplicate(
        self, original: Link, method: str, handler: Handler, request: bytes, peer: PeerIdentity | None
    ) -> None:
        """Deliver the request a second time; its reply goes nowhere, a crash still cancels it."""
        link = Link(original.sources, original.target, original.server, self)
        self.network.open_link(link)

        async def again() -> None:
            await self.network.wire_delay()
            await invoke_unary(method, handler, request, peer)

        task = original.server.spawn(link, again())
        task.add_done_callback(lambda _: self.network.close_link(link))

    # ------------------------------------------------------------------ server streaming

    async def stream(
        self,
        target: str,
        method: str,
        request: bytes,
        tls: TLSMaterial,
        timeout: float | None,  # noqa: ASYNC109
        server_name: str = "",
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        data = check_message(method, request, "request is")
        if isinstance(data, RPCError):
            raise data
        server, peer, sources = self._connect(target, tls, server_name)
        handler = server.stream_handler(method)
        if handler is None:
            raise RPCError(StatusCode.UNIMPLEMENTED, f"{method}: method not found on {target}")
        pipe = _Pipe()
        link = Link(sources, target, server, self, on_cut=lambda error: pipe.finish(error, discard=True))
        self.network.open_link(link)
        task = server.spawn(link, self._produce(link, method, handler, data, peer, pipe, deadline))
        task.add_done_callback(
            lambda _: pipe.finish(RPCError(StatusCode.CANCELLED, f"{method}: stream cancelled"))
        )
        try:
            while True:
                if deadline is None:
                    item = await pipe.get()
                else:
                    try:
                        async with asyncio.timeout_at(deadline):
                            item = await pipe.get()
                    except TimeoutError:
                        raise RPCError(
                            StatusCode.DEADLINE_EXCEEDED, f"{method} on {target} timed out after {timeout}s"
                        ) from None
                if item is None:
                    return
                if isinstance(item, RPCError):
                    raise RPCError(item.code, item.message)
                yield item
        finally:
            self.network.close_link(link)
            task.cancel()

    async def _produce(
        self,
        link: Link,
        method: str,
        handler: StreamHandler,
        request: bytes,
        peer: PeerIdentity | None,
        pipe: _Pipe,
        deadline: float | None,
    ) -> None:
        network = self.network
        await network.wire_delay()
        if network.draw_drop():
            if deadline is None:
                pipe.finish(RPCError(StatusCode.UNAVAILABLE, f"cannot reach {link.target}: connection reset"))
                return
            await _forever()
        messages = handler(request, peer)
        try:
            async for message in messages:
                data = check_message(method, message, "handler yielded")
                if isinstance(data, RPCError):
                    pipe.finish(data)
                    return
                await network.wire_delay()
                await pipe.put(data)
        except RPCError as exc:
            pipe.finish(as_sent(exc))
        except Exception as exc:
            log.exception("stream handler for %s failed", method)
            pipe.finish(internal(method, exc))
        else:
            pipe.finish(None)
        finally:
            aclose = getattr(messages, "aclose", None)
            if aclose is not None:
                await aclose()
