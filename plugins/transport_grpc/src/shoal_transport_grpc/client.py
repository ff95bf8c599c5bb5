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
join token's root digest) before trusting it. Such a channel serves one call, and its errors
say what the peer turned out to be (``firstcontact``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from shoal.plugin import TLSMaterial

from shoal_transport_grpc import anonymous, errors, firstcontact, wakeups
from shoal_transport_grpc.options import CLIENT_OPTIONS

#: (target, root, certificate, key, server name)
_Key = tuple[str, bytes, bytes, bytes, str]


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

    async def acquire(
        self,
        target: str,
        tls: TLSMaterial,
        timeout: float | None,  # noqa: ASYNC109
        server_name: str = "",
    ) -> _Channel:
        """The channel for this target, material and expected server name (empty: the pool's
        manager name), counted as in use until ``release``."""
        key = (target, tls.root_pem, tls.cert_pem, tls.key_pem, server_name or self._server_name)
        entry = self._channels.get(key)
        if entry is None:
            root = tls.root_pem or await firstcontact.presented_root(target, timeout)
            entry = self._channels.get(key)  # another call may have made it meanwhile
            if entry is None:
                entry = self._open(key, target, tls, root)
        entry.active += 1
        return entry

    def release(self, entry: _Channel) -> None:
        entry.active -= 1
        if entry.retired and entry.active == 0:
            self._close_later(entry)

    def forget(self, entry: _Channel) -> None:
        """Keep ``entry`` for no further call (closed once idle): a first-contact channel trusts
        whatever root the peer presented, and the next attempt must look again."""
        for key, cached in list(self._channels.items()):
            if cached is entry:
                del self._channels[key]
        entry.retired = True
        if entry.active == 0:
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
            ("grpc.ssl_target_name_override", key[4]),
        ]
        entry = _Channel(grpc.aio.secure_channel(target, credentials, options=options))
        wakeups.unblock(asyncio.get_running_loop())
        for old_key, old in list(self._channels.items()):
            if old_key[0] == target and old_key[4] == key[4]:
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


async def call(
    pool: ChannelPool,
    target: str,
    method: str,
    request: bytes,
    tls: TLSMaterial,
    timeout: float,  # noqa: ASYNC109
) -> bytes:
    entry = await pool.acquire(target, tls, timeout)
    first_contact = not tls.root_pem
    try:
        response: bytes = await entry.unary_callable(method)(request, timeout=timeout)
        return response
    except grpc.aio.AioRpcError as exc:
        if first_contact:
            raise firstcontact.call_error(exc, target, method, timeout) from None
        raise errors.from_aio_error(exc, target, method, timeout) from None
    finally:
        pool.release(entry)
        if first_contact:
            pool.forget(entry)


async def stream(
    pool: ChannelPool,
    target: str,
    method: str,
    request: bytes,
    tls: TLSMaterial,
    timeout: float | None,  # noqa: ASYNC109
    server_name: str = "",
) -> AsyncIterator[bytes]:
    entry = await pool.acquire(target, tls, timeout, server_name)
    rpc = entry.stream_callable(method)(request, timeout=timeout)
    try:
        async for message in rpc:
            yield message
    except grpc.aio.AioRpcError as exc:
        raise errors.from_aio_error(exc, target, method, timeout) from None
    finally:
        rpc.cancel()
        pool.release(entry)
