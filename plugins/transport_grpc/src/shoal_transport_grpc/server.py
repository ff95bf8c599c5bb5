"""The listening side: one grpc.aio server, each kernel method registered with it.

No generated stubs: the kernel's methods are plain ``bytes -> bytes`` coroutines keyed by their
full gRPC name (``/shoal.Dispatcher/Heartbeat``), passed straight through as bytes (no
(de)serializers). Each is registered with the server, which gives each method an intake of
its own (``intake``); a generic handler behind them answers UNIMPLEMENTED for the others. Credentials are *dynamic*: gRPC asks
``_fetch_config`` at every new handshake, which is how ``update_tls`` makes renewed material
take effect for new connections without cutting existing ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from shoal.plugin import Handler, RPCError, StatusCode, StreamHandler, TLSMaterial

from shoal_transport_grpc import anonymous, bridge, cqreader, errors, handoff, intake, wakeups
from shoal_transport_grpc.intake import Intake
from shoal_transport_grpc.options import SERVER_OPTIONS
from shoal_transport_grpc.peers import PeerVerifier
from shoal_transport_grpc.servingloop import ServingLoop

log = logging.getLogger("shoal.transport.grpc")

_Context = grpc.aio.ServicerContext[bytes, bytes]


def server_certificate_config(tls: TLSMaterial) -> Any:
    """gRPC server TLS config: our cert (+ root, so tofu clients can learn it), clients' trust."""
    if not tls.cert_pem or not tls.key_pem:
        raise ValueError(
            "grpc transport: a server needs a certificate and a key (TLSMaterial cert_pem, key_pem)"
        )
    if not tls.root_pem:
        raise ValueError("grpc transport: a server needs the cluster root (TLSMaterial.root_pem)")
    chain = tls.cert_pem.rstrip(b"\n") + b"\n" + tls.root_pem
    return grpc.ssl_server_certificate_configuration(
        [(tls.key_pem, chain)], root_certificates=tls.root_pem.rstrip(b"\n") + b"\n" + anonymous.ca_pem()
    )


async def _abort(context: _Context, error: RPCError) -> None:
    await context.abort(errors.to_grpc(error.code), error.message, ((errors.HANDLER_MARK, "1"),))


def _internal(name: str, exc: Exception) -> RPCError:
    """A handler bug: the caller learns which method and what went wrong; the log has the trace."""
    return RPCError(StatusCode.INTERNAL, f"{name}: {type(exc).__name__}: {exc}")


def _wrap_unary(
    name: str, handler: Handler, verifier: PeerVerifier, home: asyncio.AbstractEventLoop | None
) -> Any:
    """``home``: the handlers' loop when gRPC runs on another one, else None (called in place)."""

    async def unary(request: bytes, context: _Context) -> bytes:
        try:
            peer = verifier.identify(context)
            if home is None:
                return await handler(request, peer)
            return await bridge.call_unary(lambda: handler(request, peer), home)
        except RPCError as exc:
            await _abort(context, exc)
        except Exception as exc:
            log.exception("handler for %s failed", name)
            await _abort(context, _internal(name, exc))
        raise AssertionError("unreachable: abort raises")

    return unary


def _wrap_stream(
    name: str, handler: StreamHandler, verifier: PeerVerifier, home: asyncio.AbstractEventLoop | None
) -> Any:
    async def stream(request: bytes, context: _Context) -> AsyncIterator[bytes]:
        try:
            peer = verifier.identify(context)
            messages = (
                handler(request, peer)
                if home is None
                else bridge.call_stream(lambda: handler(request, peer), home)
            )
            async for message in messages:
                yield message
        except RPCError as exc:
            await _abort(context, exc)
        except Exception as exc:
            log.exception("stream handler for %s failed", name)
            await _abort(context, _internal(name, exc))

    return stream


class _Router(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Finds the wrapped handler for a method name; ``None`` makes gRPC answer UNIMPLEMENTED."""

    def __init__(
        self,
        verifier: PeerVerifier,
        unary: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
        home: asyncio.AbstractEventLoop | None,
    ) -> None:
        self._methods: dict[str, Any] = {}
        for name, handler in unary.items():
            wrapped = _wrap_unary(name, handler, verifier, home)
            self._methods[name] = grpc.unary_unary_rpc_method_handler(wrapped)
        for name, stream in streams.items():
            if name in self._methods:
                raise ValueError(f"grpc transport: method {name} registered as both unary and stream")
            self._methods[name] = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(name, stream, verifier, home)
            )

    @property
    def methods(self) -> Mapping[str, Any]:
        """Every method's ``RpcMethodHandler`` by full name."""
        return self._methods

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._methods.get(handler_call_details.method)


def _split_address(listen_addr: str) -> tuple[str, int]:
    host, sep, port = listen_addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"grpc transport: invalid listen address {listen_addr!r}, expected HOST:PORT")
    return host, int(port)


class GrpcServer:
    """A running server (``shoal.roles.TransportServer``).

    With ``own_loop`` (option ``transport.serving-thread=on``) gRPC runs on a ``ServingLoop`` of
    its own (a thread) so that taking calls in never waits behind the caller's busy loop; the
    handlers still run on the caller's loop (``handoff``, else ``bridge``). Without, gRPC runs
    on the caller's loop too. ``intake`` says how calls are taken in (``intake``: each method
    registered, the default; ``generic``, one intake for all, is kept to compare in the bench).
    """

    def __init__(self, serving: ServingLoop | None) -> None:
        self._serving = serving
        self._server: grpc.aio.Server | None = None
        self._address = ""
        self._verifier: PeerVerifier | None = None
        self._pending: Any = None
        self._handoff: handoff.Handoff | None = None
        self._cq_reader: cqreader.Watchdog | None = None
        #: Whether the daemon's loop takes over gRPC's completion events (``cqreader``).
        self._completion_reader = False

    @classmethod
    async def start(
        cls,
        listen_addr: str,
        tls: TLSMaterial,
        unary: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
        *,
        own_loop: bool = False,
        completion_reader: bool = False,
        intake: Intake = "registered",
    ) -> GrpcServer:
        host, _ = _split_address(listen_addr)
        initial = server_certificate_config(tls)
        if not own_loop:
            instance = cls(None)
            await instance._listen(listen_addr, host, tls, initial, unary, streams, None, intake)
            return instance
        serving = ServingLoop(f"grpc-server {listen_addr}")
        instance = cls(serving)
        instance._completion_reader = completion_reader
        home = asyncio.get_running_loop()
        try:
            await serving.run(instance._listen(listen_addr, host, tls, initial, unary, streams, home, intake))
        except BaseException:
            serving.stop()
            raise
        return instance

    async def _listen(
        self,
        listen_addr: str,
        host: str,
        tls: TLSMaterial,
        initial: Any,
        unary: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
        home: asyncio.AbstractEventLoop | None,
        how: Intake,
    ) -> None:
        """Create, bind and start the gRPC server: runs on the loop gRPC is to use."""
        self._verifier = verifier = PeerVerifier(tls.root_pem)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        router = _Router(verifier, unary, streams, home)
        registered = how == "registered" and intake.register(server, router.methods)
        server.add_generic_rpc_handlers((router,))
        if home is not None and registered:
            reason = handoff.unavailable_reason()
            if reason:
                log.info("grpc transport: every call crosses to the handlers' loop by the bridge: %s", reason)
            else:
                at_home = intake.registrable(_Router(verifier, unary, streams, None).methods)
                self._handoff = handoff.Handoff(server, at_home, home)
        credentials = grpc.dynamic_ssl_server_credentials(
            initial, self._fetch_config, require_client_authentication=True
        )
        try:
            port = server.add_secure_port(listen_addr, credentials)
            reason = ""
        except RuntimeError as exc:  # recent gRPC raises, older ones return 0
            port, reason = 0, f" ({exc})"
        if port == 0:
            raise OSError(
                f"grpc transport: cannot listen on {listen_addr}: address in use or unavailable{reason}"
            )
        self._address = f"{host}:{port}"
        await server.start()
        wakeups.unblock(asyncio.get_running_loop())
        self._server = server
        if self._handoff is not None:
            self._handoff.start()
            if self._completion_reader:
                self._cq_reader = cqreader.install(asyncio.get_running_loop(), self._handoff.home)

    def _fetch_config(self) -> Any:
        """Called by gRPC (on its own thread) at each handshake: new material, or None for no change."""
        config, self._pending = self._pending, None
        return config

    @property
    def address(self) -> str:
        return self._address

    def update_tls(self, tls: TLSMaterial) -> None:
        self._pending = server_certificate_config(tls)
        if self._verifier is not None:
            self._verifier.set_root(tls.root_pem)

    async def stop(self, grace: float = 1.0) -> None:
        """Stop taking calls, end those in flight after ``grace`` s, then end the serving thread."""
        server, self._server = self._server, None
        serving = self._serving
        if serving is None:
            if server is not None:
                await server.stop(grace)
            return
        try:
            if server is not None and serving.alive:
                await serving.run(self._stop_on_serving_loop(server, grace))
        finally:
            serving.stop()

    async def _stop_on_serving_loop(self, server: grpc.aio.Server, grace: float) -> None:
        await server.stop(grace)
        if self._cq_reader is not None:
            self._cq_reader.stop()
        if self._handoff is not None:
            await self._handoff.stop()
