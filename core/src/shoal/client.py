"""The CLI's client for the daemon's control API: JSON lines over the local Unix socket, or
over TCP with mutual TLS (``tcp://HOST:PORT``, see ``shoal.controltls``).

``ssl``, ``shoal.controltls`` and ``pathlib`` are imported only for a TCP endpoint (or the
configuration directory): a command on the local socket never needs them, and the CLI's
start-up counts in every command's time (issue 18 item 4).
"""

from __future__ import annotations

import json
import os
import socket
import sys

#: Not ``typing.TYPE_CHECKING``: a detached ``service create`` imports this module without
#: click, and ``typing`` (2-3 ms), ``collections.abc`` and ``dataclasses`` (which imports
#: ``inspect``: 5-10 ms) would then be most of what it loads.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any, BinaryIO

    from shoal.controltls import TCPAddress, TLSFiles

DEFAULT_SOCKET = "/run/shoal/shoal.sock"
HOST_ENV = "SHOAL_HOST"
#: docker's DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, under shoal's names.
TLS_VERIFY_ENV = "SHOAL_TLS_VERIFY"
CERT_PATH_ENV = "SHOAL_CERT_PATH"
#: Where contexts, the current context and the default certificates live (``~/.shoal``).
CONFIG_DIR_ENV = "SHOAL_CONFIG"


class ClientError(Exception):
    """The daemon answered with an error, or could not be reached. One line, shown as is."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def config_dir() -> Path:
    """``SHOAL_CONFIG``, else ``~/.shoal``: contexts, the current context, default certificates."""
    from pathlib import Path

    return Path(os.environ.get(CONFIG_DIR_ENV) or Path.home() / ".shoal")


class Endpoint:
    """Where a daemon is reached: a Unix socket, or a TCP address with the TLS files to use.

    An immutable value, compared and hashed by its fields (what ``@dataclass(frozen=True)``
    made it before; written out because ``dataclasses`` imports ``inspect``, see above).
    """

    __slots__ = ("tcp", "tls", "unix_path")
    unix_path: str
    tcp: TCPAddress | None
    tls: TLSFiles | None

    def __init__(
        self, unix_path: str = DEFAULT_SOCKET, tcp: TCPAddress | None = None, tls: TLSFiles | None = None
    ) -> None:
        object.__setattr__(self, "unix_path", unix_path)
        object.__setattr__(self, "tcp", tcp)
        object.__setattr__(self, "tls", tls)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def _fields(self) -> tuple[str, TCPAddress | None, TLSFiles | None]:
        return (self.unix_path, self.tcp, self.tls)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Endpoint)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"Endpoint(unix_path={self.unix_path!r}, tcp={self.tcp!r}, tls={self.tls!r})"

    def __str__(self) -> str:
        return str(self.tcp) if self.tcp is not None else f"unix://{self.unix_path}"


def endpoint(host: str | None, tls: TLSFiles | None = None) -> Endpoint:
    """``-H``/``SHOAL_HOST`` -> an endpoint. ``unix:///path`` (or ``/path``) needs nothing else;
    ``tcp://HOST:PORT`` needs mutual TLS: ``tls``, or ``SHOAL_TLS_VERIFY`` set with the files in
    ``SHOAL_CERT_PATH`` (default ``~/.shoal``) as ``ca.pem``, ``cert.pem``, ``key.pem``."""
    value = host or os.environ.get(HOST_ENV) or f"unix://{DEFAULT_SOCKET}"
    if value.startswith("unix://"):
        return Endpoint(unix_path=value[len("unix://") :])
    if value.startswith("/"):
        return Endpoint(unix_path=value)
    if not value.startswith("tcp://"):
        raise ClientError(
            "INVALID_ARGUMENT",
            f'invalid host "{value}": use -H unix:///path/to/shoal.sock or tcp://HOST:PORT',
        )
    from pathlib import Path

    from shoal.controltls import TLSConfigError, TLSFiles, parse_tcp

    try:
        address = parse_tcp(value, "host")
    except TLSConfigError as exc:
        raise ClientError("INVALID_ARGUMENT", str(exc)) from None
    if tls is None and os.environ.get(TLS_VERIFY_ENV):
        tls = TLSFiles.in_directory(Path(os.environ.get(CERT_PATH_ENV) or config_dir()))
    if tls is None:
        raise ClientError(
            "INVALID_ARGUMENT",
            f"{address} needs mutual TLS: add --tlsverify (with --tlscacert, --tlscert, --tlskey or "
            f"the files ca.pem, cert.pem, key.pem in {CERT_PATH_ENV}), or use a context",
        )
    return Endpoint(tcp=address, tls=tls)


def socket_path(host: str | None) -> str:
    """``-H unix:///path`` (or ``SHOAL_HOST``) -> ``/path``; the default socket otherwise."""
    return endpoint(host).unix_path


class Client:
    """Methods mirror the daemon's. By default every call opens its own connection, as the CLI
    does; ``keep_alive=True`` sends successive unary calls over one connection (reopened after
    a failure), which saves a connection per call for a program making many (streams always
    get their own)."""

    def __init__(
        self, host: str | Endpoint | None = None, timeout: float | None = 120.0, *, keep_alive: bool = False
    ) -> None:
        self.endpoint = host if isinstance(host, Endpoint) else endpoint(host)
        self.path = self.endpoint.unix_path
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._kept: tuple[socket.socket, BinaryIO] | None = None
        self._tls_context: ssl.SSLContext | None = None

    def close(self) -> None:
        """Close the kept connection, if any."""
        kept, self._kept = self._kept, None
        if kept is not None:
            kept[1].close()
            kept[0].close()

    def _connect(self) -> socket.socket:
        if self.endpoint.tcp is not None:
            return self._connect_tcp(self.endpoint.tcp)
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

    def _connect_tcp(self, address: TCPAddress) -> socket.socket:
        """A TCP connection with mutual TLS, the handshake done (one-line ``ClientError``s)."""
        from shoal.controltls import TLSConfigError, client_context, describe_tls_error

        if self._tls_context is None:
            assert self.endpoint.tls is not None
            try:
                self._tls_context = client_context(self.endpoint.tls)
            except TLSConfigError as exc:
                raise ClientError("INVALID_ARGUMENT", str(exc)) from None
        try:
            raw = socket.create_connection((address.host, address.port), timeout=self.timeout)
        except OSError as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise ClientError(
                "UNAVAILABLE", f"cannot connect to the shoal daemon at {address}: {reason}"
            ) from None
        try:
            return self._tls_context.wrap_socket(raw, server_hostname=address.host)
        except OSError as exc:  # ssl.SSLError is one
            raw.close()
            raise ClientError("UNAVAILABLE", describe_tls_error(exc, address)) from None

    def _lost(self, exc: OSError) -> ClientError:
        """A connection that failed after it was made: over TLS, most often the daemon refusing
        this client's certificate once it has seen it (TLS 1.3 says so on the first read)."""
        if self.endpoint.tcp is not None and self._tls_error(exc):
            from shoal.controltls import describe_tls_error

            return ClientError("UNAVAILABLE", describe_tls_error(exc, self.endpoint.tcp))
        return ClientError("UNAVAILABLE", f"lost the connection to the shoal daemon: {exc.strerror or exc}")

    def _tls_error(self, exc: OSError) -> bool:
        """Whether ``exc`` is a failure of TLS, which only a TCP endpoint speaks (and only then
        is ``ssl`` imported)."""
        if self.endpoint.tcp is None:
            return False
        import ssl

        return isinstance(exc, ssl.SSLError)

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
        except OSError as exc:
            failure = self.failure(method, exc)
            if failure is None:
                raise
            raise failure from None
        finally:
            sock.close()

    def failure(self, method: str, exc: OSError) -> ClientError | None:
        """What a user is told when a call's connection fails while the call is sent or its
        answer read (None: not a failure of the connection, let it propagate): one place for
        every reader of a reply (``_lines``, ``cli.piecereader``)."""
        if isinstance(exc, TimeoutError):
            return _no_answer(method)
        if isinstance(exc, ConnectionResetError) or self._tls_error(exc):
            return self._lost(exc)
        return None

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
            raise self._lost(exc) from None
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
        if self.endpoint.tcp is not None:
            # Over TLS 1.3 a daemon that refuses the client's certificate does so after the
            # client's side of the handshake is done: the first read just ends.
            raise ClientError(
                "UNAVAILABLE",
                f"the shoal daemon at {self.endpoint.tcp} closed the connection without an answer: it "
                "refused this client's certificate (use one signed by the CA the daemon trusts: "
                "--tlscert, --tlskey), or it is stopping",
            )
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
