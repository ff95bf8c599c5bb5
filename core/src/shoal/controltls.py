"""Mutual TLS for the control API over TCP (``shoal -H tcp://HOST:PORT --tlsverify``).

The local API's Unix socket needs no TLS: whoever may open it (root) controls the node. To drive
a manager from another machine, the daemon may also listen on TCP (``shoal daemon
--control-listen tcp://ADDR:PORT --tlscacert CA --tlscert CERT --tlskey KEY``), like ``dockerd
-H tcp://... --tlsverify``: a client is served only if it presents a certificate signed by the
CA the operator named there (its own PKI, not the swarm's CA: node certificates must never
grant control), and the client checks the daemon's certificate against the same kind of CA. A
client with a good certificate may do exactly what a local root user may on the socket.

Both sides build their ``ssl.SSLContext`` here (TLS 1.2 at least); unreadable or mismatched
files are a ``TLSConfigError`` with one line naming the file. ``ssl`` is imported only by the
functions that use it: every CLI command imports this module (for ``-H tcp://`` parsing), and
one on the local socket never needs TLS (the CLI's start-up counts in every command's time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

#: docker's file names in a certificate directory (``DOCKER_CERT_PATH``, ``SHOAL_CERT_PATH``).
CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"


class TLSConfigError(ValueError):
    """Certificates that cannot be used: one line naming the file and what is wrong."""


@dataclass(frozen=True)
class TLSFiles:
    """The CA to trust, and this side's certificate and key (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> TLSFiles:
        """``ca.pem``, ``cert.pem`` and ``key.pem`` in ``directory``, as docker's cert path."""
        return cls(directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)


@dataclass(frozen=True)
class TCPAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_tcp(value: str, what: str) -> TCPAddress:
    """``tcp://HOST:PORT`` -> its parts; ``TLSConfigError`` naming ``what`` otherwise."""
    rest = value.removeprefix("tcp://")
    host, sep, port_text = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not value.startswith("tcp://") or not sep or not host or not port_text.isdigit():
        raise TLSConfigError(f'invalid {what} "{value}": use tcp://HOST:PORT')
    port = int(port_text)
    if not 0 < port < 65536:
        raise TLSConfigError(f'invalid {what} "{value}": the port must be 1-65535')
    return TCPAddress(host, port)


def _load(context: ssl.SSLContext, files: TLSFiles) -> None:
    import ssl

    for path, what in ((files.ca, "CA certificate"), (files.cert, "certificate"), (files.key, "key")):
        if not path.is_file():
            raise TLSConfigError(f"cannot read the {what} {path}: no such file")
    try:
        context.load_verify_locations(cafile=str(files.ca))
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot use the CA certificate {files.ca}: {_reason(exc)}") from None
    try:
        context.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            f"cannot use the certificate {files.cert} with the key {files.key}: {_reason(exc)}"
        ) from None


def _reason(exc: BaseException) -> str:
    import ssl

    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """The daemon's side: its certificate, and every client must present one from ``files.ca``."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, files)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(files: TLSFiles) -> ssl.SSLContext:
    """The CLI's side: the daemon's certificate must come from ``files.ca`` and name the host."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, files)
    return context


def describe_tls_error(exc: BaseException, address: TCPAddress) -> str:
    """One line for a failed TLS exchange with the daemon at ``address``."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _reason(exc)
        return (
            f"cannot verify the shoal daemon at {address}: {detail} "
            "(is --tlscacert the CA that signed the daemon's certificate?)"
        )
    reason = _reason(exc)
    if any(word in reason for word in ("unknown ca", "certificate required", "bad certificate", "handshake")):
        return (
            f"the shoal daemon at {address} refused this client's certificate ({reason}): "
            "use a certificate signed by the CA the daemon trusts (--tlscert, --tlskey)"
        )
    return f"TLS error with the shoal daemon at {address}: {reason}"
