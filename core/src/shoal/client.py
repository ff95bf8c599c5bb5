"""The CLI's client for the daemon's local API (JSON lines over the Unix socket)."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

DEFAULT_SOCKET = "/run/shoal/shoal.sock"
HOST_ENV = "SHOAL_HOST"


class ClientError(Exception):
    """The daemon answered with an error, or could not be reached. One line, shown as is."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def socket_path(host: str | None) -> str:
    """``-H unix:///path`` (or ``SHOAL_HOST``) -> ``/path``; the default socket otherwise."""
    value = host or os.environ.get(HOST_ENV) or f"unix://{DEFAULT_SOCKET}"
    if value.startswith("unix://"):
        return value[len("unix://") :]
    if value.startswith("/"):
        return value
    raise ClientError("INVALID_ARGUMENT", f'invalid host "{value}": use -H unix:///path/to/shoal.sock')


class Client:
    """Methods mirror the daemon's. By default every call opens its own connection, as the CLI
    does; ``keep_alive=True`` sends successive unary calls over one connection (reopened after
    a failure), which saves a connection per call for a program making many (streams always
    get their own)."""

    def __init__(
        self, host: str | None = None, timeout: float | None = 120.0, *, keep_alive: bool = False
    ) -> None:
        self.path = socket_path(host)
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._kept: tuple[socket.socket, BinaryIO] | None = None

    def close(self) -> None:
        """Close the kept connection, if any."""
        kept, self._kept = self._kept, None
        if kept is not None:
            kept[1].close()
            kept[0].close()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise ClientError(
                "UNAVAILABLE",
                f"cannot connect to the shoal daemon at unix://{self.path}: no such socket "
                "(is `shoal daemon` running? use -H to choose another socket)",
            ) from None
        except PermissionError:
            sock.close()
            raise ClientError(
                "PERMISSION_DENIED", f"permission denied on unix://{self.path}: run as root"
            ) from None
        except OSError as exc:
            sock.close()
            raise ClientError(
                "UNAVAILABLE",
                f"cannot connect to the shoal daemon at unix://{self.path}: {exc.strerror or exc}",
            ) from None
        return sock

    def _lines(self, method: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        sock = self._connect()
        try:
            payload = json.dumps({"method": method, "params": params}).encode() + b"\n"
            try:
                sock.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before it read everything (too large): its answer line says why
            with sock.makefile("rb") as stream:
                for raw in stream:
                    yield _answer(raw)
        except TimeoutError:
            raise _no_answer(method) from None
        finally:
            sock.close()

    def _kept_lines(self, method: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """One unary request over the kept connection (opened on first use)."""
        payload = json.dumps({"method": method, "params": params}).encode() + b"\n"
        try:
            for attempt in (1, 2):
                if self._kept is None:
                    sock = self._connect()
                    self._kept = (sock, sock.makefile("rb"))
                try:
                    self._kept[0].sendall(payload)
                    break
                except (BrokenPipeError, ConnectionResetError):
                    # The daemon closed the kept connection (it restarted): nothing was sent,
                    # so the request is safe to send again on a new one.
                    self.close()
                    if attempt == 2:
                        raise
            assert self._kept is not None
            raw = self._kept[1].readline()
        except TimeoutError:
            self.close()
            raise _no_answer(method) from None
        except OSError as exc:
            self.close()
            raise ClientError(
                "UNAVAILABLE", f"lost the connection to the shoal daemon: {exc.strerror or exc}"
            ) from None
        if not raw:
            self.close()
            return
        yield _answer(raw)

    def call(self, method: str, **params: Any) -> Any:
        lines = self._kept_lines(method, params) if self.keep_alive else self._lines(method, params)
        for message in lines:
            if "result" in message:
                if message.get("warning"):
                    # e.g. a manager with no leader answering from its own, possibly stale, copy
                    print(f"Warning: {message['warning']}", file=sys.stderr)
                return message["result"]
        raise ClientError("UNAVAILABLE", "the shoal daemon closed the connection without an answer")

    def stream(self, method: str, **params: Any) -> Iterator[Any]:
        for message in self._lines(method, params):
            if message.get("end"):
                return
            if "item" in message:
                yield message["item"]


def _answer(raw: bytes) -> dict[str, Any]:
    """One line from the daemon; an error line raises it as ``ClientError``."""
    message: dict[str, Any] = json.loads(raw)
    if "error" in message:
        error = message["error"]
        raise ClientError(str(error.get("code")), str(error.get("message")))
    return message


def _no_answer(method: str) -> ClientError:
    return ClientError("DEADLINE_EXCEEDED", f"the shoal daemon did not answer {method} in time")
