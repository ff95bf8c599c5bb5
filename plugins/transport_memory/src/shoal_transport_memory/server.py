"""The listening side: a registered address, its handlers, and how a handler's outcome is sent.

A server is only an entry in the network's address registry; callers find it there and run
its handlers in tasks of their own (``spawn``), each started in an empty ``contextvars``
context so nothing of the caller's context leaks to the server, as over a real wire. What a
handler returns or raises is turned into what gRPC would put on the wire: bytes, a handler's
``RPCError`` (code and message), or ``INTERNAL`` naming the method for any other exception.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from shoal.plugin import Handler, PeerIdentity, RPCError, StatusCode, StreamHandler, TLSMaterial

from shoal_transport_memory.handshake import check_server_material
from shoal_transport_memory.network import Link, MemoryNetwork

log = logging.getLogger("shoal.transport.memory")

#: gRPC's limit as the gRPC transport sets it (swarmkit's ``MaxMsgSize``): larger messages fail.
MAX_MESSAGE_BYTES = 128 << 20
_CLEANUP_SECONDS = 1.0


def as_sent(error: RPCError) -> RPCError:
    """A fresh error as the caller would decode it (``OK`` is no failure code: gRPC says UNKNOWN)."""
    code = StatusCode.UNKNOWN if error.code is StatusCode.OK else error.code
    return RPCError(code, error.message)


def internal(method: str, exc: BaseException) -> RPCError:
    """A handler bug: the caller learns which method and what went wrong; the log has the trace."""
    return RPCError(StatusCode.INTERNAL, f"{method}: {type(exc).__name__}: {exc}")


def check_message(method: str, message: object, what: str) -> bytes | RPCError:
    """The message as bytes, or the error gRPC would give for something it cannot send."""
    if isinstance(message, bytes):
        data = message
    elif isinstance(message, bytearray | memoryview):
        data = bytes(message)
    else:
        return RPCError(StatusCode.INTERNAL, f"{method}: {what} {type(message).__name__}, not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        return RPCError(
            StatusCode.UNKNOWN,
            f"RESOURCE_EXHAUSTED: {method}: message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}",
        )
    return data


async def invoke_unary(
    method: str, handler: Handler, request: bytes, peer: PeerIdentity | None
) -> bytes | RPCError:
    """Run a unary handler; its reply or the error the caller will see."""
    try:
        response = await handler(request, peer)
    except RPCError as exc:
        return as_sent(exc)
    except Exception as exc:
        log.exception("handler for %s failed", method)
        return internal(method, exc)
    return check_message(method, response, "handler returned")


class MemoryServer:
    """A running server (``shoal.roles.TransportServer``) in a ``MemoryNetwork``."""

    def __init__(
        self,
        network: MemoryNetwork,
        listen_addr: str,
        tls: TLSMaterial,
        unary: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
        on_stop: Callable[[str], None],
    ) -> None:
        check_server_material(tls)
        both = sorted(set(unary) & set(streams))
        if both:
            raise ValueError(f"memory transport: method {both[0]} registered as both unary and stream")
        self._network = network
        self._tls = tls
        self._unary = dict(unary)
        self._streams = dict(streams)
        self._on_stop = on_stop
        self._stopped = False
        self._address = network.bind(listen_addr, self)

    @property
    def address(self) -> str:
        return self._address

    @property
    def tls(self) -> TLSMaterial:
        """The material the next handshake uses."""
        return self._tls

    def unary_handler(self, method: str) -> Handler | None:
        return self._unary.get(method)

    def stream_handler(self, method: str) -> StreamHandler | None:
        return self._streams.get(method)

    def update_tls(self, tls: TLSMaterial) -> None:
        """New calls handshake with ``tls``; calls and streams already open are untouched."""
        check_server_material(tls)
        self._tls = tls

    def spawn(self, link: Link, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run server-side work for ``link`` in a fresh context; the link can cancel it."""
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        link.task = task
        return task

    async def stop(self, grace: float = 1.0) -> None:
        """Refuse new calls now; give calls in flight ``grace`` seconds, then cut them."""
        if self._stopped:
            return
        self._stopped = True
        self._network.unbind(self._address, self)
        self._on_stop(self._address)
        mine = self._network.links(lambda link: link.server is self)
        running = [link.task for link in mine if link.task is not None and not link.task.done()]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        stopped = RPCError(StatusCode.UNAVAILABLE, f"cannot reach {self._address}: server stopped")
        left = self._network.links(lambda link: link.server is self)
        for link in left:
            link.cut(stopped)
        cancelled = [link.task for link in left if link.task is not None and not link.task.done()]
        if cancelled:  # let handlers run their cleanup; one that ignores cancellation is not waited for
            await asyncio.wait(cancelled, timeout=_CLEANUP_SECONDS)
