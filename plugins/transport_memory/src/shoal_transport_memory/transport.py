"""The ``memory`` transport provider: whole clusters in one process, on one event loop.

Servers are entries in a ``MemoryNetwork`` (the module-level ``NETWORK`` unless one is given);
calls find the target there and run its handler directly, with no sockets, so a simulation is
deterministic: same seed, same code, same run. Certificates are checked as the gRPC transport's
handshake checks them (see ``handshake``), so authorisation code sees the same peers.

A transport's own addresses (for partitions and crashes) are those of the servers it serves,
plus ``name`` when given: a client-only transport (a CLI) needs a name to be partitioned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import ClassVar

from shoal.plugin import Handler, RPCError, StatusCode, StreamHandler, TLSMaterial

from shoal_transport_memory.client import Caller
from shoal_transport_memory.handshake import Handshaker
from shoal_transport_memory.network import NETWORK, MemoryNetwork
from shoal_transport_memory.server import MemoryServer

DEFAULT_SERVER_NAME = "swarm-manager"


class MemoryTransport:
    """``shoal.roles.TransportProvider`` over a simulated in-process network."""

    role: ClassVar[str] = "transport"
    api_version: ClassVar[int] = 1

    def __init__(
        self, network: MemoryNetwork | None = None, *, server_name: str = DEFAULT_SERVER_NAME, name: str = ""
    ) -> None:
        self.network = network if network is not None else NETWORK
        self._name = name
        self._served: set[str] = set()
        self._caller = Caller(self.network, Handshaker(server_name), self.addresses)

    def addresses(self) -> frozenset[str]:
        """Where this node is on the network: its servers' addresses and its name."""
        return frozenset(self._served | {self._name}) if self._name else frozenset(self._served)

    async def serve(
        self,
        listen_addr: str,
        tls: TLSMaterial,
        unary: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
    ) -> MemoryServer:
        server = MemoryServer(self.network, listen_addr, tls, unary, streams, self._served.discard)
        self._served.add(server.address)
        return server

    async def call(
        self,
        target: str,
        method: str,
        request: bytes,
        *,
        tls: TLSMaterial,
        timeout: float,  # noqa: ASYNC109 - the deadline travels with the RPC, not around it
    ) -> bytes:
        return await self._caller.call(target, method, request, tls, timeout)

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
        return self._caller.stream(target, method, request, tls, timeout, server_name)

    async def close(self) -> None:
        """Cancel this transport's calls in flight (``CANCELLED``), as closing gRPC channels does."""
        self._caller.cut_all(RPCError(StatusCode.CANCELLED, "memory transport closed"))
