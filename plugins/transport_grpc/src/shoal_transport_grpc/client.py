"""The calling side: a pool of secure channels, one per (target, TLS material).

A channel is a long-lived HTTP/2 connection; opening one costs a TLS handshake, so calls reuse
it. When a node renews its certificate the kernel starts passing new material: the next call
opens a fresh channel (the new certificate is presented), and the old channel for that target
is *retired*: closed as soon as its last call in flight ends, never cutting a call.

Server names: node certificates name the node (CN/SAN = node ID, plus the role), not the host,
so the client pins the TLS server name with ``grpc.ssl_target_name_override`` to
``swarm-manager`` by default, as Swarm's clients do. The server must therefore hold a
certificate from the cluster root *and* be a manager; the plugin option
``transport.server_name`` changes the expected name.

Trust on first use: a client with an empty ``TLSMaterial.root_pem`` (a joining node before it
has the root) learns the root the server presents, as Swarm's joiner does with
``InsecureSkipVerify``. That proves nothing by itself: the caller must check what it gets (the
join token's root digest) before trusting it.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial

from shoal_transport_grpc import anonymous, errors
from shoal_transport_grpc.options import CLIENT_OPTIONS

_Key = tuple[str, bytes, bytes, bytes]


class _Channel:
    """A gRPC channel with its cached method callables and a count of calls in flight."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.active = 0
        self.retired = False
        self.unary: dict[str, Any] = {}
        self.streams: dict[str, Any] = {}

    def unary_callable(self, method: str) -> Any:
        multi = self.unary.get(method)
        if multi is None:
            multi = self.unary[method] = self.channel.unary_unary(method)  # type: ignore[call-arg]
        return multi

    def stream_callable(self, method: str) -> Any:
        multi = self.streams.get(method)
        if multi is None:
            multi = self.streams[method] = self.channel.unary_stream(method)  # type: ignore[call-arg]
        return multi


class ChannelPool:
    """Secure channels keyed by target and material; closes the ones renewal made stale."""

    def __init__(self, server_name: str) -> None:
        self._server_name = server_name
        self._channels: dict[_Key, _Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._tofu_context: ssl.SSLContext | None = None

    async def acquire(self, target: str, tls: TLSMaterial, timeout: float | None) -> _Channel:  # noqa: ASYNC109
        """The channel for this target and material, counted as in use until ``release``."""
        key = (target, tls.root_pem, tls.cert_pem, tls.key_pem)
        entry = self._channels.get(key)
        if entry is None:
            root = tls.root_pem or await self._presented_root(target, timeout)
            entry = self._channels.get(key)  # another call may have made it meanwhile
            if entry is None:
                entry = self._open(key, target, tls, root)
        entry.active += 1
        return entry

    def release(self, entry: _Channel) -> None:
        entry.active -= 1
        if entry.retired and entry.active == 0:
            self._close_later(entry)

    def _open(self, key: _Key, target: str, tls: TLSMaterial, root_pem: bytes) -> _Channel:
        if tls.cert_pem and tls.key_pem:
            key_pem, cert_pem = tls.key_pem, tls.cert_pem
        else:
            key_pem, cert_pem = anonymous.client_material()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        options: list[tuple[str, Any]] = [
            *CLIENT_OPTIONS,
            ("grpc.ssl_target_name_override", self._server_name),
        ]
        entry = _Channel(grpc.aio.secure_channel(target, credentials, options=options))
        for old_key, old in list(self._channels.items()):
            if old_key[0] == target:
                del self._channels[old_key]
                old.retired = True
                if old.active == 0:
                    self._close_later(old)
        self._channels[key] = entry
        return entry

    def _close_later(self, entry: _Channel) -> None:
        task = asyncio.get_running_loop().create_task(entry.channel.close(grace=None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        entries, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(e.channel.close(grace=None) for e in entries), *self._closing)

    # ------------------------------------------------------------------ trust on first use

    def _tofu_ssl_context(self) -> ssl.SSLContext:
        """An unverifying TLS client context presenting the anonymous certificate (the server
        requires a client certificate at the handshake)."""
        if self._tofu_context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            key_pem, cert_pem = anonymous.client_material()
            with tempfile.TemporaryDirectory() as tmp:  # ssl loads key pairs from files only
                (Path(tmp) / "anon.pem").write_bytes(key_pem + cert_pem)
                context.load_cert_chain(Path(tmp) / "anon.pem")
            self._tofu_context = context
        return self._tofu_context

    async def _presented_root(self, target: str, timeout: float | None) -> bytes:  # noqa: ASYNC109
        """The last certificate of the chain ``target`` presents (our servers send their root)."""
        host, _, port = target.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port), ssl=self._tofu_ssl_context()),
                timeout,
            )
        except (OSError, ValueError, TimeoutError) as exc:
            raise RPCError(
                StatusCode.UNAVAILABLE, f"cannot reach {target}: {exc or type(exc).__name__}"
            ) from None
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            # Public as SSLObject.get_unverified_chain() from Python 3.13; the same call before.
            getter = (
                getattr(ssl_object, "get_unverified_chain", None) or ssl_object._sslobj.get_unverified_chain
            )
            chain = getter() or []
        finally:
            writer.close()
        if len(chain) < 2:
            raise RPCError(StatusCode.UNAVAILABLE, f"cannot reach {target}: server did not present its root")
        pem: bytes = chain[-1].public_bytes(ssl._ssl.ENCODING_PEM).encode()  # type: ignore[attr-defined]
        return pem


async def call(
    pool: ChannelPool,
    target: str,
    method: str,
    request: bytes,
    tls: TLSMaterial,
    timeout: float,  # noqa: ASYNC109
) -> bytes:
    entry = await pool.acquire(target, tls, timeout)
    try:
        response: bytes = await entry.unary_callable(method)(request, timeout=timeout)
        return response
    except grpc.aio.AioRpcError as exc:
        raise errors.from_aio_error(exc, target, method, timeout) from None
    finally:
        pool.release(entry)


async def stream(
    pool: ChannelPool,
    target: str,
    method: str,
    request: bytes,
    tls: TLSMaterial,
    timeout: float | None,  # noqa: ASYNC109
) -> AsyncIterator[bytes]:
    entry = await pool.acquire(target, tls, timeout)
    rpc = entry.stream_callable(method)(request, timeout=timeout)
    try:
        async for message in rpc:
            yield message
    except grpc.aio.AioRpcError as exc:
        raise errors.from_aio_error(exc, target, method, timeout) from None
    finally:
        rpc.cancel()
        pool.release(entry)
