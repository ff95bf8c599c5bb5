"""A probe, for measurement only: the Raft store's messages over a direct mutual-TLS TCP
connection per peer instead of gRPC pull streams. Not the daemon's code and not safe to run a
swarm on (see the last paragraph).

Python imports ``sitecustomize`` at start-up from any directory on ``PYTHONPATH``; with this
directory there and ``SHOAL_BENCH_DIRECT_CHANNEL`` naming a directory, a ``shoal daemon``'s raft
store (``PeerNetwork``) is patched so that:

- each member also listens, with its manager certificate (client certificates required, chained
  to the swarm's root), on its advertise port + ``SHOAL_BENCH_DIRECT_OFFSET`` (1000);
- a member's puller connects there to each peer instead of opening a ``RaftPull`` stream and
  says its member ID; the peer then writes what its Raft sends that member on the connection
  *at once*, in the Ready that sent it (no loop turn, no gRPC), as length-prefixed envelopes
  (``wire``); the reader hands each to Raft in the protocol's callback (one thread wake-up on
  receipt: the loop's, where gRPC wakes its poller thread and then the loop);
- anything else (no connection yet, a port taken) goes by gRPC's ``RaftStep`` as before;
- with ``SHOAL_BENCH_DIRECT_AT_ONCE=1``, the raft driver also handles what arrived in that
  callback (its Ready at once) instead of on the loop's next turn.

Each daemon writes how many Raft sends went each way to ``<dir>/<pid>.json`` when it exits.

What a real channel would need and this lacks: the kernel's check of the caller (a demoted or
removed manager's messages are refused per message on gRPC; here any manager certificate of the
swarm's root is taken, and nothing is re-checked), a port the operator chooses and advertises
(not a fixed offset), renewal of the TLS material, and a fallback and tests for a mixed cluster.
"""

from __future__ import annotations

import os

_DIR = os.environ.get("SHOAL_BENCH_DIRECT_CHANNEL")


def _is_daemon() -> bool:
    """Whether this process is a ``shoal daemon`` (the bench's clients load this file too)."""
    try:
        with open("/proc/self/cmdline", "rb") as cmdline:
            return b"\0daemon\0" in cmdline.read()
    except OSError:
        return False


if _DIR and _is_daemon():
    import asyncio
    import atexit
    import json
    import socket
    import ssl
    import struct
    import tempfile
    from collections.abc import Callable
    from typing import Any

    from shoal_store_raft import peernet, wire

    _OFFSET = int(os.environ.get("SHOAL_BENCH_DIRECT_OFFSET", "1000"))
    _LEN = struct.Struct("<I")
    _counts = {"direct": 0, "grpc": 0}
    #: Also handle what arrived in the callback that read it (the raft driver's Ready at once).
    _AT_ONCE = os.environ.get("SHOAL_BENCH_DIRECT_AT_ONCE") == "1"

    def _write_counts() -> None:
        with open(f"{_DIR}/{os.getpid()}.json", "w") as out:
            json.dump(_counts, out)

    atexit.register(_write_counts)

    def _context(tls: Any, server: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
            with open(cert, "wb") as out:
                out.write(tls.cert_pem)
            with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                out.write(tls.key_pem)
            ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(cadata=tls.root_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        if not server:
            ctx.check_hostname = False  # manager certificates name no address
        return ctx

    class _Frames(asyncio.Protocol):
        """Length-prefixed frames; ``on_frame(self, frame)`` for each, in the loop's callback."""

        def __init__(self, on_frame: Callable[[Any, bytes], None], on_lost: Callable[[Any], None]) -> None:
            self.buffer = bytearray()
            self.on_frame = on_frame
            self.on_lost = on_lost
            self.transport: Any = None
            self.member: int | None = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            buffer = self.buffer
            buffer += data
            while len(buffer) >= _LEN.size:
                size = _LEN.unpack_from(buffer)[0]
                if len(buffer) < _LEN.size + size:
                    break
                frame = bytes(buffer[_LEN.size : _LEN.size + size])
                del buffer[: _LEN.size + size]
                self.on_frame(self, frame)

        def connection_lost(self, exc: Exception | None) -> None:
            self.on_lost(self)

    network = peernet.PeerNetwork
    original_init, original_send = network.__init__, network.send

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._direct: dict[int, Any] = {}  # member ID -> the transport its messages go on
        self._direct_server = asyncio.get_running_loop().create_task(_serve(self))

    async def _serve(self: Any) -> None:
        host, _, port = self.advertise_addr.rpartition(":")

        def on_frame(proto: _Frames, frame: bytes) -> None:
            if proto.member is None:  # the hello: the caller's member ID
                proto.member = int.from_bytes(frame, "little")
                self._peer(proto.member)
                self._direct[proto.member] = proto.transport

        def on_lost(proto: _Frames) -> None:
            if proto.member is not None and self._direct.get(proto.member) is proto.transport:
                del self._direct[proto.member]

        loop = asyncio.get_running_loop()
        await loop.create_server(
            lambda: _Frames(on_frame, on_lost), host, int(port) + _OFFSET, ssl=_context(self.tls(), True)
        )

    def send(self: Any, member_id: int, data: bytes) -> None:
        transport = self._direct.get(member_id)
        if transport is not None and not transport.is_closing() and not self._closed:
            if member_id not in self._replies:
                body = wire.encode(self._envelope(member_id, [data], names=False))
                transport.write(_LEN.pack(len(body)) + body)
                _counts["direct"] += 1
                return
        _counts["grpc"] += 1
        original_send(self, member_id, data)

    async def _pull(self: Any, peer: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closed and not peer.removed:
                addr = peer.addr = peer.addr or self.book.address(peer.member_id)
                if addr:
                    host, _, port = addr.rpartition(":")
                    ended = loop.create_future()

                    def on_frame(proto: _Frames, frame: bytes) -> None:
                        peer.last_ok = loop.time()
                        self._take(frame)
                        if _AT_ONCE and getattr(self.replica, "_scheduled", False):
                            self.replica._run_process()  # the Ready now, not on the next turn

                    def on_lost(proto: _Frames, ended: asyncio.Future[None] = ended) -> None:
                        if not ended.done():
                            ended.set_result(None)

                    try:
                        transport, _ = await loop.create_connection(
                            lambda: _Frames(on_frame, on_lost),
                            host,
                            int(port) + _OFFSET,
                            ssl=_context(self.tls(), False),
                        )
                        transport.write(_LEN.pack(8) + self.replica.member_id.to_bytes(8, "little"))
                        await ended
                    except OSError:
                        pass
                if self._closed or not self.replica.is_member(peer.member_id):
                    return
                await asyncio.sleep(peernet.RETRY_PAUSE)
        finally:
            peer.puller = None

    network.__init__ = __init__  # type: ignore[method-assign]
    network.send = send  # type: ignore[method-assign]
    network._pull = _pull  # type: ignore[method-assign]
