"""The listening side: one grpc.aio server, every kernel method behind one generic handler.

No generated stubs: the kernel's methods are plain ``bytes -> bytes`` coroutines keyed by their
full gRPC name (``/shoal.Dispatcher/Heartbeat``), so the server looks the name up in a dict
and passes bytes straight through (no (de)serializers). Credentials are *dynamic*: gRPC asks
``_fetch_config`` at every new handshake, which is how ``update_tls`` makes renewed material
take effect for new connections without cutting existing ones.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from shoal.plugin import Handler, RPCError, StatusCode, StreamHandler, TLSMaterial

from shoal_transport_grpc import anonymous, errors
from shoal_transport_grpc.options import SERVER_OPTIONS
from shoal_transport_grpc.peers import PeerVerifier

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


def _wrap_unary(name: str, handler: Handler, verifier: PeerVerifier) -> Any:
    async def unary(request: bytes, context: _Context) -> bytes:
        try:
            return await handler(request, verifier.identify(context))
        except RPCError as exc:
            await _abort(context, exc)
        except Exception as exc:
            log.exception("handler for %s failed", name)
            await _abort(context, _internal(name, exc))
        raise AssertionError("unreachable: abort raises")

    return unary


def _wrap_stream(name: str, handler: StreamHandler, verifier: PeerVerifier) -> Any:
    async def stream(request: bytes, context: _Context) -> AsyncIterator[bytes]:
        try:
            async for message in handler(request, verifier.identify(context)):
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
        self, verifier: PeerVerifier, unary: Mapping[str, Handler], streams: Mapping[str, StreamHandler]
    ) -> None:
        self._methods: dict[str, Any] = {}
        for name, handler in unary.items():
            self._methods[name] = grpc.unary_unary_rpc_method_handler(_wrap_unary(name, handler, verifier))
        for name, stream in streams.items():
            if name in self._methods:
                raise ValueError(f"grpc transport: method {name} registered as both unary and stream")
            self._methods[name] = grpc.unary_stream_rpc_method_handler(_wrap_stream(name, stream, verifier))

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._methods.get(handler_call_details.method)


def _split_address(listen_addr: str) -> tuple[str, int]:
    host, sep, port = listen_addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"grpc transport: invalid listen address {listen_addr!r}, expected HOST:PORT")
    return host, int(port)


class GrpcServer:
    """A running server (``shoal.roles.TransportServer``)."""

    def __init__(self, server: grpc.aio.Server, address: str, verifier: PeerVerifier) -> None:
        self._server = server
        self._address = address
        self._verifier = verifier
        self._pending: Any = None

    @classmethod
    async def start(
        cls,
        listen_addr: str,
        tls: TLSMaterial,
        unary: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
    ) -> GrpcServer:
        host, _ = _split_address(listen_addr)
        verifier = PeerVerifier(tls.root_pem)
        initial = server_certificate_config(tls)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((_Router(verifier, unary, streams),))
        instance = cls(server, "", verifier)
        credentials = grpc.dynamic_ssl_server_credentials(
            initial, instance._fetch_config, require_client_authentication=True
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
        instance._address = f"{host}:{port}"
        await server.start()
        return instance

    def _fetch_config(self) -> Any:
        """Called by gRPC (on its own thread) at each handshake: new material, or None for no change."""
        config, self._pending = self._pending, None
        return config

    @property
    def address(self) -> str:
        return self._address

    def update_tls(self, tls: TLSMaterial) -> None:
        self._pending = server_certificate_config(tls)
        self._verifier.set_root(tls.root_pem)

    async def stop(self, grace: float = 1.0) -> None:
        await self._server.stop(grace)
