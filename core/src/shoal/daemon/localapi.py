"""The daemon's local API: JSON lines over a root-only Unix socket, like docker.sock.

The client writes ``{"method": M, "params": {...}}`` and a newline; the server answers
``{"result": ...}``, or ``{"error": {"code": C, "message": M}}``, or for streaming methods any
number of ``{"item": ...}`` lines then ``{"end": true}``. After a unary answer the connection
stays open for the client's next request (the CLI closes it; a program making many calls saves
a connection per call); after a stream or a malformed request the server closes it. The socket
is created with mode 0600: whoever can open it controls the node, so no TLS is needed.

The same API may also be served on TCP (``RemoteListener``: ``shoal daemon --control-listen
tcp://ADDR:PORT`` with a CA, certificate and key), where every client must present a certificate
from that CA (mutual TLS, ``shoal.controltls``); such a client can do all a local root user can.

A request line longer than ``MAX_REQUEST_BYTES`` or nested deeper than ``boundedjson.MAX_DEPTH``
gets one ``INVALID_ARGUMENT`` answer and the connection is closed; the rest of an oversized line is
read and thrown away in small pieces (so the client can finish sending and read the answer), and
memory never holds more than the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal import boundedjson, yieldingjson
from shoal.controltls import TCPAddress
from shoal.roles.transport import StatusCode

log = logging.getLogger("shoal.localapi")

UnaryMethod = Callable[[dict[str, Any]], Awaitable[Any]]
StreamMethod = Callable[[dict[str, Any]], AsyncIterator[Any]]
#: Connections the kernel queues before accepting: many concurrent CLI calls must not be reset.
BACKLOG = 1024
#: Longest request line accepted (also the reader's buffer limit).
MAX_REQUEST_BYTES = boundedjson.MAX_REQUEST_BYTES
#: How much of an oversized line is read and thrown away before the connection is just closed.
DISCARD_LIMIT = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Warned:
    """A result the client shows with a warning on stderr (e.g. possibly stale data)."""

    result: Any
    warning: str


@dataclass(frozen=True)
class RemoteListener:
    """Where to serve the control API on TCP, and the TLS context that requires client certificates."""

    address: TCPAddress
    tls: ssl.SSLContext


class APIError(Exception):
    """A request failed in a way the user must hear about (one line, shown as is)."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LocalAPIServer:
    """Serves registered methods on a Unix socket."""

    def __init__(self, path: Path, error_mapper: Callable[[BaseException], APIError | None]) -> None:
        self.path = path
        self.unary: dict[str, UnaryMethod] = {}
        self.streams: dict[str, StreamMethod] = {}
        self._map_error = error_mapper
        self._server: asyncio.AbstractServer | None = None
        #: Kept connections waiting for their next request: closed by ``stop``.
        self._idle: set[asyncio.StreamWriter] = set()
        self._stopping = False
        #: Also serve on TCP with mutual TLS (``--control-listen``); set before ``start``.
        self.remote: RemoteListener | None = None
        self._remote_server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES, backlog=BACKLOG
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        await self._start_remote()

    async def _start_remote(self) -> None:
        """The TCP listener, if asked for: a client without a certificate from the operator's CA
        fails the TLS handshake and never reaches a method."""
        if self.remote is None:
            return
        self._remote_server = await asyncio.start_server(
            self._serve,
            host=self.remote.address.host,
            port=self.remote.address.port,
            ssl=self.remote.tls,
            limit=MAX_REQUEST_BYTES,
            backlog=BACKLOG,
            ssl_handshake_timeout=10.0,
        )
        log.info("control API listening on %s (mutual TLS)", self.remote.address)

    async def stop(self) -> None:
        self._stopping = True
        for writer in list(self._idle):
            writer.close()
        for server in (self._server, self._remote_server):
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):  # not wait_for: it can swallow a cancellation
                        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._serve_one(reader, writer) and not self._stopping:
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection may carry another."""
        self._idle.add(writer)
        try:
            line = await _read_line(reader)
        finally:
            self._idle.discard(writer)
        if line is None:
            await self._send(writer, _error("INVALID_ARGUMENT", boundedjson.too_large_message()))
            await _discard_line(reader)
            return False
        if not line:
            return False
        try:
            method, params = _parse_request(line)
        except boundedjson.BadJSON as exc:
            await self._send(writer, _error("INVALID_ARGUMENT", str(exc)))
            return False
        try:
            if method in self.streams:
                watcher = asyncio.create_task(reader.read(1))  # EOF = the client went away
                try:
                    async for item in self.streams[method](params):
                        if watcher.done():
                            return False
                        await self._send(writer, {"item": item})
                finally:
                    watcher.cancel()
                await self._send(writer, {"end": True})
                return False
            if method not in self.unary:
                await self._send(writer, _error("UNIMPLEMENTED", f"unknown method {method}"))
                return True
            result = await self.unary[method](params)
            if isinstance(result, Warned):
                await self._send(writer, {"result": result.result, "warning": result.warning})
            else:
                await self._send(writer, {"result": result})
            return True
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            api_error = self._map_error(exc)
            if api_error is None:
                log.exception("local API method %s failed", method)
                api_error = APIError(StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            await self._send(writer, _error(api_error.code.value, api_error.message))
            return method not in self.streams

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        # A large reply (100,000 tasks) is encoded in pieces: the loop also runs the manager;
        # a streamed one (service ps) is written as it is made (yieldingjson.Streamed).
        async for part in yieldingjson.line_parts(message):
            writer.write(part)
            await writer.drain()


def _parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """``{"method": M, "params": {...}}`` -> (M, params); ``BadJSON`` with the reason otherwise."""
    request = boundedjson.loads(line)
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        raise boundedjson.BadJSON('malformed request: send {"method": NAME, "params": {...}}')
    params = request.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise boundedjson.BadJSON("malformed request: params must be a JSON object")
    return request["method"], params


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next request line (``b""`` at EOF), or ``None`` when it is longer than the limit (it
    is then still unread: see ``_discard_line``)."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial  # the client closed after a last line without a newline
    except asyncio.LimitOverrunError:
        return None


async def _discard_line(reader: asyncio.StreamReader) -> None:
    """Read the rest of an oversized line in pieces, keeping none of it (up to ``DISCARD_LIMIT``)."""
    discarded = 0
    while discarded < DISCARD_LIMIT:
        chunk = await reader.read(64 * 1024)
        if not chunk or b"\n" in chunk:
            return
        discarded += len(chunk)


def _error(code: str, message: str) -> dict[str, Any]:
    """An error answer line."""
    return {"error": {"code": code, "message": message}}
