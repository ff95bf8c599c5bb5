"""The transport role: node-to-node RPC with peer identity.

The kernel registers its RPC services as plain async functions over bytes (serialised
protobuf messages) keyed by method name (``shoal.rpc`` lists them); the transport carries the
bytes and tells each handler who called, from the peer's verified client certificate.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable


class StatusCode(enum.Enum):
    """RPC outcome codes (gRPC's names) that cross the transport unchanged."""

    OK = "OK"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"


class RPCError(Exception):
    """Raised by handlers to fail a call, and by clients when a call fails.

    The transport must deliver ``code`` and ``message`` from the handler to the caller intact.
    Connection failures surface as ``UNAVAILABLE``, timeouts as ``DEADLINE_EXCEEDED``, a
    rejected handshake as ``UNAVAILABLE`` with the TLS reason in the message.
    """

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PeerIdentity:
    """Who is calling, from the subject of the peer's verified certificate."""

    node_id: str  # CN
    role: str  # OU: "swarm-manager" or "swarm-worker"
    cluster_id: str  # O


@dataclass(frozen=True)
class TLSMaterial:
    """PEM material for one side of a mutual-TLS connection.

    ``cert_pem``/``key_pem`` may be empty for a client that has no certificate yet (joining);
    the server then sees ``peer=None``. ``root_pem`` is the CA the other side must chain to.
    """

    root_pem: bytes
    cert_pem: bytes = b""
    key_pem: bytes = b""


#: ``handler(request, peer)`` for a unary call. ``peer`` is None when the caller presented
#: no client certificate.
Handler = Callable[[bytes, PeerIdentity | None], Awaitable[bytes]]
#: ``handler(request, peer)`` for a server-streaming call.
StreamHandler = Callable[[bytes, PeerIdentity | None], AsyncIterator[bytes]]


@runtime_checkable
class TransportServer(Protocol):
    """A listening server returned by ``TransportProvider.serve``."""

    @property
    def address(self) -> str:
        """``host:port`` actually bound (the port is resolved when 0 was asked)."""

    def update_tls(self, tls: TLSMaterial) -> None:
        """Serve new connections with renewed material; existing ones are not cut."""

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, give calls in flight ``grace`` seconds, then close."""


@runtime_checkable
class TransportProvider(Protocol):
    """Serves and calls RPC methods between nodes."""

    role: ClassVar[str]  # "transport"
    api_version: ClassVar[int]  # 1

    async def serve(
        self,
        listen_addr: str,
        tls: TLSMaterial,
        unary: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
    ) -> TransportServer:
        """Listen on ``listen_addr`` (``host:port``) with TLS.

        Client certificates are optional at the handshake but, when sent, must chain to
        ``tls.root_pem``; the handler gets the identity of a verified one. An unknown method
        fails with ``UNIMPLEMENTED``.
        """

    async def call(
        self,
        target: str,
        method: str,
        request: bytes,
        *,
        tls: TLSMaterial,
        timeout: float,  # noqa: ASYNC109 - the deadline travels with the RPC, not around it
    ) -> bytes:
        """Call a unary method on ``target`` (``host:port``); raises ``RPCError``."""

    def stream(
        self,
        target: str,
        method: str,
        request: bytes,
        *,
        tls: TLSMaterial,
        timeout: float | None = None,
        server_name: str = "",
    ) -> AsyncIterator[bytes]:
        """Call a server-streaming method; iterate for the messages. Raises ``RPCError``.

        ``server_name``: the name (a DNS SAN) the server's certificate must carry; empty, the
        name managers carry (``swarm-manager`` unless configured). The kernel names a node's ID
        to reach that node and no other: a worker serving its tasks' logs to a manager.
        """

    async def close(self) -> None:
        """Close client channels this provider opened."""
