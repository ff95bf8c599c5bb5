"""Security from the first node: root CA and node identity after ``swarm init``, the local socket,
and the agent reaching the dispatcher over mutual TLS."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import ShoalNode, wait_until
from shoal import rpc
from shoal.identity import load_credentials
from shoal.proto import rpc_pb2 as rpb

pytestmark = [pytest.mark.cluster]


def subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    return str(cert.subject.get_attributes_for_oid(oid)[0].value)


def test_init_creates_root_and_node_identity(node_factory: object) -> None:
    node: ShoalNode = node_factory()  # type: ignore[operator]
    node.start()
    assert stat.S_IMODE(node.socket.stat().st_mode) == 0o600, "the local API socket is root-only"
    node.init()
    info = node.info()
    certs = node.state_dir / "certificates"
    creds = load_credentials(certs)
    root = x509.load_pem_x509_certificate(creds.root_pem)
    cert = x509.load_pem_x509_certificate(creds.cert_pem)

    assert subject(root, NameOID.COMMON_NAME) == "swarm-ca"
    root_key = root.public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey) and root_key.curve.name == "secp256r1"
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert abs(lifetime - dt.timedelta(days=365 * 20)) < dt.timedelta(days=6)

    assert subject(cert, NameOID.COMMON_NAME) == info["NodeID"]
    assert subject(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == "swarm-manager"
    assert subject(cert, NameOID.ORGANIZATION_NAME) == info["ClusterID"]
    assert cert.issuer == root.subject

    # The node key is the only private key on disk, readable by root alone; the root CA key
    # lives in the store (replicated with the cluster state), never in a PEM file.
    pem_files = {
        p.name for p in node.state_dir.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()[:64]
    }
    assert pem_files == {"swarm-node.key"}
    assert stat.S_IMODE((certs / "swarm-node.key").stat().st_mode) == 0o600


async def test_dispatcher_requires_a_cluster_certificate(node_factory: object) -> None:
    """The agent's path is mutual TLS: without a node certificate the dispatcher refuses."""
    node: ShoalNode = node_factory()  # type: ignore[operator]
    node.start()
    node.init()
    wait_until(lambda: node.info().get("AgentConnected"), 20, what="the agent session over mTLS")
    creds = load_credentials(node.state_dir / "certificates")

    from shoal.loader import PluginLoader
    from shoal.roles.transport import RPCError, StatusCode, TLSMaterial

    loader = PluginLoader()
    transport = loader.provider("transport", loader.make_context("transport", node.base / "client-transport"))
    try:
        anonymous = TLSMaterial(root_pem=creds.root_pem)
        with pytest.raises(RPCError) as refused:
            await transport.call(
                node.addr, rpc.HEARTBEAT, rpb.HeartbeatRequest().SerializeToString(), tls=anonymous, timeout=5
            )
        assert refused.value.code == StatusCode.PERMISSION_DENIED
        member = TLSMaterial(root_pem=creds.root_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
        with pytest.raises(RPCError) as no_session:
            await transport.call(
                node.addr,
                rpc.HEARTBEAT,
                rpb.HeartbeatRequest(session_id="nope").SerializeToString(),
                tls=member,
                timeout=5,
            )
        assert no_session.value.code == StatusCode.NOT_FOUND  # authenticated, but no such session
    finally:
        await transport.close()
