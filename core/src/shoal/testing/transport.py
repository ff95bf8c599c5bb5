"""Conformance suite for transport providers, and a throwaway cluster PKI for tests.

Use it from your plugin's tests::

    import pytest
    from shoal.testing.transport import TransportConformance

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        async def transport(self):
            provider = MyTransport()
            yield provider
            await provider.close()

Servers listen on ``listen_addr`` (fixture, default ``127.0.0.1:0``: any free port); override
it if your transport uses another address space. Certificates come from ``ClusterPKI``, which
issues what the cluster CA issues (CN = node ID, OU = role, O = cluster ID, SANs role + node ID
(+ ``swarm-ca`` for managers), server and client auth) without needing a CA plugin.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal import identity
from shoal.roles.transport import (
    Handler,
    PeerIdentity,
    RPCError,
    StatusCode,
    StreamHandler,
    TLSMaterial,
    TransportProvider,
    TransportServer,
)

HOUR = dt.timedelta(hours=1)
ECHO = "/shoal.Test/Echo"
WHO = "/shoal.Test/WhoAmI"
FAIL = "/shoal.Test/Fail"
SLOW = "/shoal.Test/Slow"
COUNT = "/shoal.Test/Count"
COUNT_THEN_FAIL = "/shoal.Test/CountThenFail"


class ClusterPKI:
    """A root CA in memory that issues node certificates shaped like the cluster CA's."""

    def __init__(self, cluster_id: str = "cluster-test", root_cn: str = "swarm-ca") -> None:
        self.cluster_id = cluster_id
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, root_cn)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - HOUR)
            .not_valid_after(now + 24 * HOUR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.root_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._intermediate: tuple[ec.EllipticCurvePrivateKey, x509.Name, bytes] | None = None

    def _issuing_intermediate(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Name, bytes]:
        """A CA the root signed (made once), as a CA plugin with an offline root signs."""
        if self._intermediate is None:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarm-intermediate")])
            now = dt.datetime.now(dt.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(self._name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - HOUR)
                .not_valid_after(now + 24 * HOUR)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
                )
                .sign(self._key, hashes.SHA256())
            )
            self._intermediate = (key, name, cert.public_bytes(serialization.Encoding.PEM))
        return self._intermediate

    def node(
        self,
        node_id: str,
        role: str = "swarm-manager",
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        via_intermediate: bool = False,
    ) -> TLSMaterial:
        """TLS material for a node: a fresh key and a certificate for it.

        ``via_intermediate``: the certificate is signed by an intermediate CA under the root,
        and ``cert_pem`` holds the leaf followed by that intermediate (what a node presents).
        """
        now = dt.datetime.now(dt.UTC)
        signer, issuer, chain = (self._key, self._name, b"")
        if via_intermediate:
            signer, issuer, chain = self._issuing_intermediate()
        key_pem = identity.generate_key()
        public = identity.load_private_key(key_pem).public_key()
        names = [role, node_id] + (["swarm-ca"] if role == "swarm-manager" else [])
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.cluster_id),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - HOUR)
            .not_valid_after(not_after or now + 12 * HOUR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
            )
            .sign(signer, hashes.SHA256())
        )
        return TLSMaterial(
            root_pem=self.root_pem,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM) + chain,
            key_pem=key_pem,
        )

    def anonymous(self) -> TLSMaterial:
        """Client material with no certificate (a node that has not joined yet)."""
        return TLSMaterial(root_pem=self.root_pem)


def _peer_text(peer: PeerIdentity | None) -> bytes:
    if peer is None:
        return b"anonymous"
    return f"{peer.node_id}|{peer.role}|{peer.cluster_id}".encode()


class TestService:
    """The handlers the suite serves; records what they saw."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.peers: list[PeerIdentity | None] = []
        self.release = asyncio.Event()

    async def echo(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        self.peers.append(peer)
        return request

    async def who(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        self.peers.append(peer)
        return _peer_text(peer)

    async def fail(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        code, _, message = request.decode().partition(":")
        raise RPCError(StatusCode[code], message)

    async def slow(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        await self.release.wait()
        return request

    async def count(self, request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        self.peers.append(peer)
        for i in range(int(request)):
            yield _peer_text(peer) + b"#" + str(i).encode()

    async def count_then_fail(self, request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()
        raise RPCError(StatusCode.FAILED_PRECONDITION, "stream ended by the handler")

    def unary(self) -> Mapping[str, Handler]:
        return {ECHO: self.echo, WHO: self.who, FAIL: self.fail, SLOW: self.slow}

    def streams(self) -> Mapping[str, StreamHandler]:
        return {COUNT: self.count, COUNT_THEN_FAIL: self.count_then_fail}


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    """Every message of a stream, in order."""
    return [message async for message in stream]


class TransportConformance:
    """What every transport provider must do. Override the ``transport`` fixture."""

    @pytest.fixture
    async def transport(self) -> TransportProvider:
        pytest.fail("override the `transport` fixture to return your transport provider")

    @pytest.fixture
    def listen_addr(self) -> str:
        return "127.0.0.1:0"

    @pytest.fixture
    def pki(self) -> ClusterPKI:
        return ClusterPKI()

    @pytest.fixture
    def service(self) -> TestService:
        return TestService()

    @pytest.fixture
    async def server(
        self, transport: TransportProvider, listen_addr: str, pki: ClusterPKI, service: TestService
    ) -> AsyncIterator[TransportServer]:
        server = await transport.serve(
            listen_addr, pki.node("manager-1", "swarm-manager"), service.unary(), service.streams()
        )
        yield server
        service.release.set()
        await server.stop(0)

    # ------------------------------------------------------------------ declaration

    def test_declares_role_and_api_version(self, transport: TransportProvider) -> None:
        assert transport.role == "transport"
        assert transport.api_version == 1
        assert isinstance(transport, TransportProvider)

    async def test_server_reports_its_address(self, server: TransportServer, listen_addr: str) -> None:
        host, _, port = server.address.rpartition(":")
        assert host and port.isdigit() and int(port) > 0
        if listen_addr.endswith(":0"):
            assert server.address != listen_addr

    # ------------------------------------------------------------------ round trips

    async def test_unary_round_trip_with_identity(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI
    ) -> None:
        worker = pki.node("worker-7", "swarm-worker")
        reply = await transport.call(server.address, WHO, b"", tls=worker, timeout=10)
        assert reply == f"worker-7|swarm-worker|{pki.cluster_id}".encode()
        payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
        assert await transport.call(server.address, ECHO, payload, tls=worker, timeout=10) == payload
        assert await transport.call(server.address, ECHO, b"", tls=worker, timeout=10) == b""

    async def test_identity_through_an_intermediate(
        self, transport: TransportProvider, listen_addr: str, pki: ClusterPKI, service: TestService
    ) -> None:
        # A CA plugin may sign with an intermediate under an offline root: both sides present
        # leaf + intermediate and trust only the root; the caller's identity is its leaf's.
        manager = pki.node("manager-2", "swarm-manager", via_intermediate=True)
        server = await transport.serve(listen_addr, manager, service.unary(), service.streams())
        try:
            worker = pki.node("worker-8", "swarm-worker", via_intermediate=True)
            reply = await transport.call(server.address, WHO, b"", tls=worker, timeout=10)
            assert reply == f"worker-8|swarm-worker|{pki.cluster_id}".encode()
        finally:
            await server.stop(0)

    async def test_caller_without_certificate_is_anonymous(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI, service: TestService
    ) -> None:
        reply = await transport.call(server.address, WHO, b"", tls=pki.anonymous(), timeout=10)
        assert reply == b"anonymous"
        assert service.peers == [None]

    async def test_stream_round_trip_with_identity(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI
    ) -> None:
        manager = pki.node("manager-2", "swarm-manager")
        messages = await collect(transport.stream(server.address, COUNT, b"25", tls=manager, timeout=10))
        prefix = f"manager-2|swarm-manager|{pki.cluster_id}#".encode()
        assert messages == [prefix + str(i).encode() for i in range(25)]
        assert await collect(transport.stream(server.address, COUNT, b"0", tls=manager)) == []

    async def test_stream_to_a_named_server(
        self, transport: TransportProvider, listen_addr: str, pki: ClusterPKI, service: TestService
    ) -> None:
        """``server_name`` picks the name the server's certificate must carry: a worker's server
        answers when called by its node ID, and fails the handshake for the default manager
        name (nothing that expects a manager can be pointed at a worker)."""
        server = await transport.serve(
            listen_addr, pki.node("worker-3", "swarm-worker"), service.unary(), service.streams()
        )
        try:
            manager = pki.node("manager-2", "swarm-manager")
            named = transport.stream(
                server.address, COUNT, b"2", tls=manager, timeout=10, server_name="worker-3"
            )
            assert len(await collect(named)) == 2
            for wrong in ("", "worker-4"):
                with pytest.raises(RPCError) as refused:
                    await collect(
                        transport.stream(
                            server.address, COUNT, b"2", tls=manager, timeout=10, server_name=wrong
                        )
                    )
                assert refused.value.code == StatusCode.UNAVAILABLE, wrong
        finally:
            service.release.set()
            await server.stop(0)

    async def test_concurrent_calls(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI
    ) -> None:
        tls = pki.node("worker-1", "swarm-worker")
        requests = [str(i).encode() for i in range(100)]
        replies = await asyncio.gather(
            *(transport.call(server.address, ECHO, r, tls=tls, timeout=10) for r in requests)
        )
        assert replies == requests

    # ------------------------------------------------------------------ errors

    @pytest.mark.parametrize(
        "code",
        [
            StatusCode.NOT_FOUND,
            StatusCode.INVALID_ARGUMENT,
            StatusCode.PERMISSION_DENIED,
            StatusCode.FAILED_PRECONDITION,
            StatusCode.UNAVAILABLE,
            StatusCode.ALREADY_EXISTS,
        ],
    )
    async def test_handler_error_round_trip(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI, code: StatusCode
    ) -> None:
        message = "task 1x2y3z not found: ünïcode ok"
        with pytest.raises(RPCError) as caught:
            await transport.call(
                server.address,
                FAIL,
                f"{code.name}:{message}".encode(),
                tls=pki.node("w", "swarm-worker"),
                timeout=10,
            )
        assert caught.value.code is code
        assert caught.value.message == message

    async def test_stream_error_after_messages(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI
    ) -> None:
        received: list[bytes] = []
        with pytest.raises(RPCError) as caught:
            async for message in transport.stream(
                server.address, COUNT_THEN_FAIL, b"3", tls=pki.node("w", "swarm-worker"), timeout=10
            ):
                received.append(message)
        assert received == [b"0", b"1", b"2"]
        assert caught.value.code is StatusCode.FAILED_PRECONDITION
        assert caught.value.message == "stream ended by the handler"

    async def test_unknown_method(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI
    ) -> None:
        tls = pki.node("w", "swarm-worker")
        with pytest.raises(RPCError) as caught:
            await transport.call(server.address, "/shoal.Test/NoSuchMethod", b"", tls=tls, timeout=10)
        assert caught.value.code is StatusCode.UNIMPLEMENTED
        with pytest.raises(RPCError) as caught:
            await collect(transport.stream(server.address, "/shoal.Nope/Stream", b"", tls=tls, timeout=10))
        assert caught.value.code is StatusCode.UNIMPLEMENTED

    async def test_timeout(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI
    ) -> None:
        with pytest.raises(RPCError) as caught:
            await transport.call(server.address, SLOW, b"x", tls=pki.node("w", "swarm-worker"), timeout=0.3)
        assert caught.value.code is StatusCode.DEADLINE_EXCEEDED

    async def test_stopped_server_is_unavailable(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI
    ) -> None:
        tls = pki.node("w", "swarm-worker")
        assert await transport.call(server.address, ECHO, b"up", tls=tls, timeout=10) == b"up"
        await server.stop(0)
        with pytest.raises(RPCError) as caught:
            await transport.call(server.address, ECHO, b"down", tls=tls, timeout=10)
        assert caught.value.code is StatusCode.UNAVAILABLE
        assert server.address in caught.value.message

    async def test_renewed_server_material(
        self, transport: TransportProvider, server: TransportServer, pki: ClusterPKI
    ) -> None:
        server.update_tls(pki.node("manager-1", "swarm-manager"))
        client = pki.node("worker-new", "swarm-worker")
        reply = await transport.call(server.address, WHO, b"", tls=client, timeout=10)
        assert reply.startswith(b"worker-new|")
