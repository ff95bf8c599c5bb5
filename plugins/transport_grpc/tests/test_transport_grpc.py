"""gRPC transport specifics: who gets in, TLS failures, renewal, binding, channel reuse."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from shoal import identity
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode, TLSMaterial
from shoal.testing.transport import COUNT, ECHO, WHO, ClusterPKI, TestService, collect
from shoal_transport_grpc import GrpcTransport, anonymous
from shoal_transport_grpc.peers import PeerVerifier
from shoal_transport_grpc.server import GrpcServer

NOW = dt.datetime.now(dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
async def transport() -> AsyncIterator[GrpcTransport]:
    provider = GrpcTransport()
    yield provider
    await provider.close()


@pytest.fixture
def pki() -> ClusterPKI:
    return ClusterPKI(cluster_id="cluster-a")


@pytest.fixture
def service() -> TestService:
    return TestService()


@pytest.fixture
async def server(
    transport: GrpcTransport, pki: ClusterPKI, service: TestService
) -> AsyncIterator[GrpcServer]:
    srv = await transport.serve("127.0.0.1:0", pki.node("mgr-1"), service.unary(), service.streams())
    yield srv
    await srv.stop(0)


async def _refused(transport: GrpcTransport, target: str, tls: TLSMaterial) -> RPCError:
    with pytest.raises(RPCError) as caught:
        await transport.call(target, WHO, b"", tls=tls, timeout=10)
    return caught.value


# ---------------------------------------------------------------------------- client certificates


async def test_client_cert_from_another_ca_is_refused_at_handshake(
    transport: GrpcTransport, server: GrpcServer, service: TestService
) -> None:
    stranger = ClusterPKI(cluster_id="cluster-a")  # same names, different key
    other = stranger.node("mgr-9", "swarm-manager")
    # The stranger trusts our root (so only the *client* certificate can be the problem).
    error = await _refused(
        transport, server.address, TLSMaterial(ClusterPKI().root_pem, other.cert_pem, other.key_pem)
    )
    assert error.code is StatusCode.UNAVAILABLE
    assert service.peers == []  # no handler ran


async def test_client_cert_from_another_ca_refused_with_correct_root(
    transport: GrpcTransport, server: GrpcServer, service: TestService, pki: ClusterPKI
) -> None:
    other = ClusterPKI(cluster_id="cluster-a").node("mgr-9", "swarm-manager")
    error = await _refused(
        transport, server.address, TLSMaterial(pki.root_pem, other.cert_pem, other.key_pem)
    )
    assert error.code is StatusCode.UNAVAILABLE
    assert server.address in error.message
    assert service.peers == []


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(NOW - 3 * HOUR, NOW - HOUR), (NOW + HOUR, NOW + 3 * HOUR)],
    ids=["expired", "future"],
)
async def test_out_of_date_client_cert_is_refused(
    transport: GrpcTransport,
    server: GrpcServer,
    service: TestService,
    pki: ClusterPKI,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> None:
    stale = pki.node("wrk-1", "swarm-worker", not_before=not_before, not_after=not_after)
    error = await _refused(transport, server.address, stale)
    assert error.code is StatusCode.UNAVAILABLE
    assert service.peers == []
    # The same node with a current certificate gets in: the refusal was about dates.
    fresh = pki.node("wrk-1", "swarm-worker")
    assert (
        await transport.call(server.address, WHO, b"", tls=fresh, timeout=10)
        == b"wrk-1|swarm-worker|cluster-a"
    )


def _forge_anonymous(node: str) -> TLSMaterial:
    """A certificate from the public anonymous CA that claims to be a manager."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, node),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-manager"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster-a"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(anonymous.CA_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
        .sign(anonymous._ca_key(), hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return TLSMaterial(root_pem=b"", cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=key_pem)


async def test_anonymous_ca_certificate_claims_nothing(
    transport: GrpcTransport, server: GrpcServer, service: TestService, pki: ClusterPKI
) -> None:
    forged = _forge_anonymous("mgr-1")
    tls = TLSMaterial(root_pem=pki.root_pem, cert_pem=forged.cert_pem, key_pem=forged.key_pem)
    assert await transport.call(server.address, WHO, b"", tls=tls, timeout=10) == b"anonymous"
    assert service.peers == [None]


async def test_anonymous_ca_is_identical_across_processes() -> None:
    script = (
        "from shoal_transport_grpc import anonymous; import sys; sys.stdout.buffer.write(anonymous.ca_pem())"
    )
    proc = await asyncio.create_subprocess_exec(
        __import__("sys").executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert out == anonymous.ca_pem()


class _Context:
    """A call's servicer context as PeerVerifier sees it: the peer certificate only."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.pem]}


def test_peer_verifier_refuses_a_certificate_that_expired_on_an_open_connection(pki: ClusterPKI) -> None:
    verifier = PeerVerifier(pki.root_pem)
    good = pki.node("n1", "swarm-worker")
    assert verifier.identify(_Context(good.cert_pem)) == PeerIdentity("n1", "swarm-worker", "cluster-a")  # type: ignore[arg-type]
    expired = pki.node("n2", "swarm-worker", not_before=NOW - 3 * HOUR, not_after=NOW - HOUR)
    with pytest.raises(RPCError) as caught:
        verifier.identify(_Context(expired.cert_pem))  # type: ignore[arg-type]
    assert caught.value.code is StatusCode.UNAUTHENTICATED
    other = ClusterPKI().node("n3", "swarm-worker")
    with pytest.raises(RPCError, match=r"client certificate refused: .* bad signature") as caught:
        verifier.identify(_Context(other.cert_pem))  # type: ignore[arg-type]
    assert caught.value.code is StatusCode.UNAUTHENTICATED
    assert verifier.identify(_Context(anonymous.client_material()[1])) is None  # type: ignore[arg-type]


def test_peer_verifier_decision_under_the_old_root_is_not_kept_after_rotation(pki: ClusterPKI) -> None:
    """A call identified on the serving thread while the daemon's thread rotates the root."""

    verifier = PeerVerifier(pki.root_pem)
    classify = verifier._classify
    rotated = ClusterPKI(cluster_id="cluster-a")

    def rotation_lands_meanwhile(*args: Any) -> Any:
        decided = classify(*args)
        verifier.set_root(rotated.root_pem)  # the other thread, between decision and cache
        return decided

    verifier._classify = rotation_lands_meanwhile  # type: ignore[method-assign]
    old = pki.node("n1", "swarm-worker")
    assert verifier.identify(_Context(old.cert_pem)) == PeerIdentity("n1", "swarm-worker", "cluster-a")  # type: ignore[arg-type]
    verifier._classify = classify  # type: ignore[method-assign]
    with pytest.raises(RPCError) as caught:  # decided again, under the new root
        verifier.identify(_Context(old.cert_pem))  # type: ignore[arg-type]
    assert caught.value.code is StatusCode.UNAUTHENTICATED


# ---------------------------------------------------------------------------- server certificates


async def test_server_cert_from_another_root_fails_naming_tls(
    transport: GrpcTransport, server: GrpcServer, service: TestService
) -> None:
    other = ClusterPKI()
    error = await _refused(transport, server.address, other.node("wrk-2", "swarm-worker"))
    assert error.code is StatusCode.UNAVAILABLE
    assert error.message.startswith(f"cannot reach {server.address}: TLS handshake failed")
    assert service.peers == []


async def test_worker_certificate_cannot_serve_as_manager(
    transport: GrpcTransport, pki: ClusterPKI, service: TestService
) -> None:
    srv = await transport.serve("127.0.0.1:0", pki.node("wrk-3", "swarm-worker"), service.unary(), {})
    try:
        error = await _refused(transport, srv.address, pki.node("wrk-4", "swarm-worker"))
        assert error.code is StatusCode.UNAVAILABLE
        assert "TLS" in error.message
        # A client that expects workers (option transport.server_name) gets through.
        lenient = GrpcTransport(server_name="swarm-worker")
        try:
            reply = await lenient.call(
                srv.address, WHO, b"", tls=pki.node("wrk-4", "swarm-worker"), timeout=10
            )
            assert reply == b"wrk-4|swarm-worker|cluster-a"
        finally:
            await lenient.close()
    finally:
        await srv.stop(0)


async def test_trust_on_first_use_learns_the_presented_root(
    transport: GrpcTransport, server: GrpcServer, pki: ClusterPKI, service: TestService
) -> None:
    joiner = TLSMaterial(root_pem=b"")
    assert await transport.call(server.address, WHO, b"", tls=joiner, timeout=10) == b"anonymous"
    assert service.peers == [None]


async def test_trust_on_first_use_unreachable(transport: GrpcTransport) -> None:
    port = _free_port()
    with pytest.raises(RPCError) as caught:
        await transport.call(f"127.0.0.1:{port}", WHO, b"", tls=TLSMaterial(root_pem=b""), timeout=5)
    assert caught.value.code is StatusCode.UNAVAILABLE
    assert caught.value.message.startswith(f"cannot reach 127.0.0.1:{port}")


# ---------------------------------------------------------------------------- renewal and rotation


async def test_update_tls_serves_renewed_material_without_cutting_streams(
    transport: GrpcTransport, pki: ClusterPKI, service: TestService
) -> None:
    gate = asyncio.Event()

    async def held(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        yield b"first"
        await gate.wait()
        yield b"second"

    old_cert = pki.node("mgr-1")
    srv = await transport.serve("127.0.0.1:0", old_cert, service.unary(), {"/shoal.Test/Held": held})
    try:
        worker = pki.node("wrk-1", "swarm-worker")
        stream = transport.stream(srv.address, "/shoal.Test/Held", b"", tls=worker, timeout=30)
        assert await anext(stream) == b"first"

        # Renewal, then a root rotation (both roots trusted while it runs).
        srv.update_tls(pki.node("mgr-1"))
        new_pki = ClusterPKI(cluster_id="cluster-a", root_cn="swarm-ca-2")
        renewed = new_pki.node("mgr-1")
        bundle = pki.root_pem + new_pki.root_pem
        srv.update_tls(TLSMaterial(root_pem=bundle, cert_pem=renewed.cert_pem, key_pem=renewed.key_pem))

        fresh = GrpcTransport()  # a new client: new connection, new handshake
        try:
            client = new_pki.node("wrk-2", "swarm-worker")
            assert (
                await fresh.call(srv.address, WHO, b"", tls=client, timeout=10)
                == b"wrk-2|swarm-worker|cluster-a"
            )
            # A client that still has only the old root cannot verify the new server cert.
            error = await _refused(fresh, srv.address, pki.node("wrk-3", "swarm-worker"))
            assert "TLS" in error.message
            # Old-root clients that know the new root still get in, with their identity.
            old_client = pki.node("wrk-4", "swarm-worker")
            both = TLSMaterial(root_pem=bundle, cert_pem=old_client.cert_pem, key_pem=old_client.key_pem)
            assert (
                await fresh.call(srv.address, WHO, b"", tls=both, timeout=10)
                == b"wrk-4|swarm-worker|cluster-a"
            )
        finally:
            await fresh.close()

        gate.set()  # the stream opened before all this is still alive
        assert await anext(stream) == b"second"
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    finally:
        gate.set()
        await srv.stop(0)


async def test_channels_are_reused_and_retired(
    transport: GrpcTransport, server: GrpcServer, pki: ClusterPKI
) -> None:
    first = pki.node("wrk-1", "swarm-worker")
    for _ in range(3):
        await transport.call(server.address, ECHO, b"x", tls=first, timeout=10)
    pool = transport._pool
    assert len(pool._channels) == 1
    (old,) = pool._channels.values()
    renewed = pki.node("wrk-1", "swarm-worker")
    assert (
        await transport.call(server.address, WHO, b"", tls=renewed, timeout=10)
        == b"wrk-1|swarm-worker|cluster-a"
    )
    assert len(pool._channels) == 1
    assert old.retired
    await asyncio.gather(*pool._closing)
    assert old.channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN


# ---------------------------------------------------------------------------- addresses and errors


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_names_the_target(transport: GrpcTransport, pki: ClusterPKI) -> None:
    port = _free_port()
    error = await _refused(transport, f"127.0.0.1:{port}", pki.node("w", "swarm-worker"))
    assert error.code is StatusCode.UNAVAILABLE
    assert error.message.startswith(f"cannot reach 127.0.0.1:{port}: ")


async def test_bind_errors_name_the_address(
    transport: GrpcTransport, server: GrpcServer, pki: ClusterPKI, service: TestService
) -> None:
    with pytest.raises(OSError, match=f"cannot listen on {server.address}"):
        await transport.serve(server.address, pki.node("mgr-2"), service.unary(), {})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(OSError, match=f"cannot listen on {address}"):
            await transport.serve(address, pki.node("mgr-2"), service.unary(), {})


@pytest.mark.parametrize("address", ["nowhere", "127.0.0.1:http", ":50"])
async def test_bad_listen_address(transport: GrpcTransport, pki: ClusterPKI, address: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address"):
        await transport.serve(address, pki.node("m"), {}, {})


async def test_server_needs_certificate(transport: GrpcTransport, pki: ClusterPKI) -> None:
    with pytest.raises(ValueError, match="needs a certificate"):
        await transport.serve("127.0.0.1:0", pki.anonymous(), {}, {})


async def test_handler_bug_is_internal_and_names_the_method(
    transport: GrpcTransport, pki: ClusterPKI
) -> None:
    async def broken(request: bytes, peer: PeerIdentity | None) -> bytes:
        raise KeyError("missing")

    srv = await transport.serve("127.0.0.1:0", pki.node("m"), {"/shoal.Test/Broken": broken}, {})
    try:
        with pytest.raises(RPCError) as caught:
            await transport.call(
                srv.address, "/shoal.Test/Broken", b"", tls=pki.node("w", "swarm-worker"), timeout=10
            )
        assert caught.value.code is StatusCode.INTERNAL
        assert caught.value.message == "/shoal.Test/Broken: KeyError: 'missing'"
    finally:
        await srv.stop(0)


async def test_stream_consumer_can_stop_early(
    transport: GrpcTransport, server: GrpcServer, pki: ClusterPKI
) -> None:
    tls = pki.node("w", "swarm-worker")
    stream = transport.stream(server.address, COUNT, b"100000", tls=tls, timeout=30)
    assert (await anext(stream)).endswith(b"#0")
    await stream.aclose()  # type: ignore[attr-defined]
    assert all(e.active == 0 for e in transport._pool._channels.values())
    assert len(await collect(transport.stream(server.address, COUNT, b"3", tls=tls, timeout=10))) == 3


def test_entry_point_builds_the_provider(tmp_path: object) -> None:
    from importlib.metadata import entry_points

    from shoal.roles import PluginContext

    (ep,) = [e for e in entry_points(group="shoal.transport") if e.name == "grpc"]
    context = PluginContext(role="transport", name="grpc", state_dir=tmp_path, options={"server_name": "x"})  # type: ignore[arg-type]
    provider = ep.load().shoal_transport_provider(context=context)
    assert isinstance(provider, GrpcTransport)
    assert provider._pool._server_name == "x"
    assert identity  # the kernel helpers are what the transport verifies with
