"""The ``grpc`` transport provider: grpc.aio with mutual TLS between nodes.

Design choices (details in the modules named):

- **Client certificates are optional but verified when given** (Swarm's
  ``VerifyClientCertIfGiven``). grpc-python cannot say that: ``require_client_auth=False``
  means the server never *requests* a certificate (so no caller would have an identity) and
  ``True`` refuses callers without one (joining nodes). We require one at the handshake and let
  certificate-less callers present a certificate from a deliberately public "anonymous" CA,
  which the server trusts at the handshake and maps to ``peer=None``. A certificate from another
  CA, expired, or not yet valid is refused by the handshake itself; a node certificate that
  expires while its connection stays open is refused per call (UNAUTHENTICATED). See
  ``anonymous`` and ``peers``.
- **Server names**: clients pin the TLS name ``swarm-manager`` (node certificates name the
  node, not the host), so a server must be a manager of the cluster. See ``client``.
- **Renewal**: servers use dynamic credentials (``update_tls`` applies to new handshakes);
  clients open a new channel for new material and retire the old one when idle.
- **Intake**: every kernel method is registered with the gRPC server (``intake``), so each is
  taken in by a request of its own: a heartbeat is not queued behind every waiting status
  report, as it was when one generic handler took in every method one call at a time.
- **Serving thread** (option ``transport.serving-thread``, on by default in the plugin's entry
  point; ``GrpcTransport(serving_thread=...)`` built directly defaults to off): a server takes
  calls in on a loop of its own (``servingloop``), so that a busy daemon loop does not hold
  back taking calls in; off, gRPC runs on the caller's loop. On a busy loop the intake is
  bound by that loop's turns even with each method registered (~4 turns per call over all
  methods; docs/benchmarks.md), which only the serving thread lifts. Every call of a
  registered method is then handed whole to the caller's loop, one thread crossing each
  (``handoff``, on grpcio's internals, checked); the others (a name not ``/service/method``),
  and every call on an untested grpcio, cross there and back by the ``bridge``, each stream
  message too (~50-100 us of CPU more per call).
- **Completion reader** (option ``transport.completion-reader``, on by default; only with the
  serving thread): the daemon's loop reads gRPC's completion events itself instead of the
  serving loop (``cqreader``). It saves the leader a thread crossing per stream message
  (100,000 replicas on 1,000 hollow nodes: leader 39.9 against 54.2 CPU s in the create).
- **Wake-ups** (always): gRPC's completion-queue wake-up socket is made non-blocking and each
  loop's reader takes every waiting byte (``wakeups``); with gRPC's own, a busy process got
  about one gRPC event per loop turn once 278 events waited, which is what made managers
  elect new leaders with the completion reader on (docs/benchmarks.md).
- **Errors**: a handler's ``RPCError`` crosses with its code and message; connection failures
  are ``UNAVAILABLE`` "cannot reach HOST:PORT: ..." (``TLS handshake failed`` named when it is
  one), timeouts ``DEADLINE_EXCEEDED``, unknown methods ``UNIMPLEMENTED``. See ``errors``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import ClassVar

from shoal.plugin import Handler, StreamHandler, TLSMaterial

from shoal_transport_grpc import client
from shoal_transport_grpc.server import GrpcServer

DEFAULT_SERVER_NAME = "swarm-manager"


class GrpcTransport:
    """``shoal.roles.TransportProvider`` over grpc.aio."""

    role: ClassVar[str] = "transport"
    api_version: ClassVar[int] = 1

    def __init__(
        self,
        server_name: str = DEFAULT_SERVER_NAME,
        *,
        serving_thread: bool = False,
        completion_reader: bool = False,
    ) -> None:
        self._pool = client.ChannelPool(server_name)
        self._serving_thread = serving_thread
        self._completion_reader = completion_reader

    async def serve(
        self,
        listen_addr: str,
        tls: TLSMaterial,
        unary: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
    ) -> GrpcServer:
        return await GrpcServer.start(
            listen_addr,
            tls,
            unary,
            streams,
            own_loop=self._serving_thread,
            completion_reader=self._completion_reader,
        )

    async def call(
        self,
        target: str,
        method: str,
        request: bytes,
        *,
        tls: TLSMaterial,
        timeout: float,  # noqa: ASYNC109
    ) -> bytes:
        return await client.call(self._pool, target, method, request, tls, timeout)

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
        return client.stream(self._pool, target, method, request, tls, timeout, server_name)

    async def close(self) -> None:
        await self._pool.close()
