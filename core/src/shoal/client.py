"""The CLI's client for the daemon's local API (JSON lines over the Unix socket)."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

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
    """One request per connection; methods mirror the daemon's."""

    def __init__(self, host: str | None = None, timeout: float | None = 120.0) -> None:
        self.path = socket_path(host)
        self.timeout = timeout

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
            sock.sendall(payload)
            with sock.makefile("rb") as stream:
                for raw in stream:
                    message: dict[str, Any] = json.loads(raw)
                    if "error" in message:
                        error = message["error"]
                        raise ClientError(str(error.get("code")), str(error.get("message")))
                    yield message
        except TimeoutError:
            raise ClientError(
                "DEADLINE_EXCEEDED", f"the shoal daemon did not answer {method} in time"
            ) from None
        finally:
            sock.close()

    def call(self, method: str, **params: Any) -> Any:
        for message in self._lines(method, params):
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
