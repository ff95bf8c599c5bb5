"""Issue 13, defect 8: ``swarm join`` against something that is not a shoal manager says what
answered there, in one line, with a non-zero exit, and as soon as the peer has answered
wrongly (only a peer that never answers takes the 10 s timeout). Every listener is started by
the test on loopback; the joining node stays out of any swarm."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import ShoalNode, free_port
from shoal import tokens

pytestmark = [pytest.mark.cluster]

#: How long a join may go on after the peer first accepted its connection, when the peer
#: answers wrongly; the timeout for a peer that does not answer at all is 10 s.
QUICK = 5.0

Serve = Callable[[socket.socket], None]


class Listener:
    """A loopback TCP listener that hands every connection to ``serve`` in a thread."""

    def __init__(self, serve: Serve | None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.serve = serve
        self.connections: list[socket.socket] = []
        #: When the first connection was accepted (time.monotonic), None before.
        self.first_contact: float | None = None
        if serve is not None:  # without one, connections wait in the backlog, never answered
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.first_contact = self.first_contact or time.monotonic()
            self.connections.append(conn)
            assert self.serve is not None
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


def http_server(conn: socket.socket) -> None:
    """Like nginx on a plain-HTTP port: a request it cannot parse gets a 400 at once."""
    conn.settimeout(10)
    try:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass
    finally:
        conn.close()


def certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
    return builder.sign(issuer_key, hashes.SHA256())


def tls_server(directory: Path, with_ca: bool) -> Serve:
    """A TLS server that is not shoal: a self-signed certificate, or a leaf for "localhost"
    sent with the CA that issued it (what a shoal manager's chain looks like, another name)."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("some CA", ca_key, None)
    chain = [certificate("localhost", leaf_key, ("some CA", ca_key)), ca] if with_ca else [ca]
    key = leaf_key if with_ca else ca_key
    pem = directory / f"server-{with_ca}.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)

    def serve(conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                while tls.recv(4096):
                    pass
        except OSError:
            pass
        finally:
            conn.close()

    return serve


@pytest.fixture
def joiner(node_factory: Callable[..., ShoalNode]) -> ShoalNode:
    return node_factory("joiner").start()


@pytest.fixture
def listeners() -> Iterator[Callable[[Serve | None], Listener]]:
    started: list[Listener] = []

    def start(serve: Serve | None) -> Listener:
        started.append(Listener(serve))
        return started[-1]

    yield start
    for listener in started:
        listener.close()


def join_error(node: ShoalNode, addr: str) -> tuple[str, float]:
    """Join ``addr``; the one line on stderr and when the CLI returned (time.monotonic). The
    join must fail."""
    token = tokens.new_token(
        certificate("x", ec.generate_private_key(ec.SECP256R1()), None).public_bytes(
            serialization.Encoding.PEM
        )
    )
    result = node.cli("swarm", "join", "--token", token, addr, timeout=60)
    finished = time.monotonic()
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert node.info()["Swarm"] == "inactive", "a failed join must leave the node out of any swarm"
    return lines[0], finished


def test_join_nothing_listening_says_connection_refused(joiner: ShoalNode) -> None:
    addr = f"127.0.0.1:{free_port()}"
    line, _ = join_error(joiner, addr)
    assert f"cannot reach {addr}: connection refused" in line, line


def test_join_a_tcp_listener_that_never_answers_says_no_tls_handshake(
    joiner: ShoalNode, listeners: Callable[[Serve | None], Listener]
) -> None:
    silent = listeners(None)
    line, _ = join_error(joiner, silent.addr)
    assert f"no TLS handshake from {silent.addr} within 10s" in line, line


@pytest.mark.parametrize("peer", ["http", "tls-self-signed", "tls-with-ca"])
def test_join_a_server_that_is_not_shoal_says_so_at_once(
    peer: str, joiner: ShoalNode, listeners: Callable[[Serve | None], Listener], tmp_path: Path
) -> None:
    serve = http_server if peer == "http" else tls_server(tmp_path, with_ca=peer == "tls-with-ca")
    server = listeners(serve)
    line, finished = join_error(joiner, server.addr)
    assert f"{server.addr} did not answer as a shoal manager" in line, line
    assert server.first_contact is not None
    assert finished - server.first_contact < QUICK, (finished - server.first_contact, line)
