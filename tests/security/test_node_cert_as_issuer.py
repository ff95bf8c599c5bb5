"""Issue 16 (intermediates): a node certificate never acts as a CA.

Once nodes present intermediates (a CA plugin may sign with one under an offline root), a
chain's extra certificates are trusted as issuers if they chain to the root. A worker holds a
root-signed certificate and its key: with that key it can sign a certificate naming any node
ID and the role ``swarm-manager``, and present "forged, its own certificate" as a chain. Only a
CA certificate may issue, so that chain must be refused: by ``shoal.identity.verify_chain``
(what the memory transport and the gRPC transport's peer check use) and at the real gRPC
handshake. Before the check, the memory transport accepted the forged manager identity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from shoal import identity
from shoal.roles.transport import RPCError, TLSMaterial, TransportProvider
from shoal.testing.transport import WHO, ClusterPKI, TestService
from shoal_transport_grpc import GrpcTransport
from shoal_transport_memory import MemoryNetwork, MemoryTransport


def forge_manager(worker: TLSMaterial, cluster_id: str) -> TLSMaterial:
    """A "manager" certificate signed with the worker's own node key, chained to its certificate."""
    worker_cert = identity.load_certificate(worker.cert_pem)
    signer = identity.load_private_key(worker.key_pem)
    key_pem = identity.generate_key()
    public = identity.load_private_key(key_pem).public_key()
    now = dt.datetime.now(dt.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "the-leader"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-manager"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
                ]
            )
        )
        .issuer_name(worker_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("swarm-manager")]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    chain = forged.public_bytes(serialization.Encoding.PEM) + worker.cert_pem
    return TLSMaterial(root_pem=worker.root_pem, cert_pem=chain, key_pem=key_pem)


@pytest.mark.parametrize("via_intermediate", [False, True])
def test_verify_chain_refuses_a_node_certificate_as_issuer(via_intermediate: bool) -> None:
    pki = ClusterPKI()
    worker = pki.node("worker-1", "swarm-worker", via_intermediate=via_intermediate)
    forged = forge_manager(worker, pki.cluster_id)
    with pytest.raises(identity.CertificateError, match="is not a CA certificate"):
        identity.verify_chain(forged.cert_pem, pki.root_pem)


@pytest.fixture(params=["grpc", "memory"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[TransportProvider]:
    provider: GrpcTransport | MemoryTransport
    provider = GrpcTransport() if request.param == "grpc" else MemoryTransport(network=MemoryNetwork(seed=1))
    yield provider
    await provider.close()


async def test_transport_refuses_a_forged_manager(transport: TransportProvider) -> None:
    pki = ClusterPKI()
    service = TestService()
    server = await transport.serve("127.0.0.1:0", pki.node("manager-1"), service.unary(), service.streams())
    try:
        worker = pki.node("worker-1", "swarm-worker")
        assert await transport.call(server.address, WHO, b"", tls=worker, timeout=10) == (
            f"worker-1|swarm-worker|{pki.cluster_id}".encode()
        )
        with pytest.raises(RPCError):
            await transport.call(
                server.address, WHO, b"", tls=forge_manager(worker, pki.cluster_id), timeout=10
            )
    finally:
        await server.stop(0)
