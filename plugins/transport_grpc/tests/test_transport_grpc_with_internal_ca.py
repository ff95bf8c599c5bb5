"""End to end: certificates from the internal CA plugin carry a real mTLS call over gRPC.

This is the path a node takes: the kernel makes a key and CSR (``shoal.identity``), the CA
signs it, and the transport authenticates the peer from the certificate.
"""

from __future__ import annotations

import pytest
from shoal import identity
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode, TLSMaterial
from shoal_ca_internal import InternalCA
from shoal_transport_grpc import GrpcTransport


async def _node(ca: InternalCA, root_pem: bytes, node_id: str, role: str) -> TLSMaterial:
    key = identity.generate_key()
    issued = await ca.sign(
        identity.build_csr(key), node_id=node_id, role=role, cluster_id="clu-1", expiry_seconds=3600
    )
    return TLSMaterial(root_pem=root_pem, cert_pem=issued.cert_pem, key_pem=key)


async def test_internal_ca_certificates_work_for_mutual_tls() -> None:
    ca = InternalCA()
    root = await ca.create_root()
    seen: list[PeerIdentity | None] = []

    async def who(request: bytes, peer: PeerIdentity | None) -> bytes:
        seen.append(peer)
        if peer is None or peer.role != "swarm-manager":
            raise RPCError(StatusCode.PERMISSION_DENIED, "manager certificate required")
        return peer.node_id.encode()

    transport = GrpcTransport()
    server = await transport.serve(
        "127.0.0.1:0", await _node(ca, root.cert_pem, "mgr-a", "swarm-manager"), {"/shoal.Ctl/Who": who}, {}
    )
    try:
        manager = await _node(ca, root.cert_pem, "mgr-b", "swarm-manager")
        assert (
            await transport.call(server.address, "/shoal.Ctl/Who", b"", tls=manager, timeout=10) == b"mgr-b"
        )
        worker = await _node(ca, root.cert_pem, "wrk-c", "swarm-worker")
        with pytest.raises(RPCError) as caught:
            await transport.call(server.address, "/shoal.Ctl/Who", b"", tls=worker, timeout=10)
        assert caught.value.code is StatusCode.PERMISSION_DENIED
        assert seen == [
            PeerIdentity("mgr-b", "swarm-manager", "clu-1"),
            PeerIdentity("wrk-c", "swarm-worker", "clu-1"),
        ]
        # A node of another cluster (another internal CA) is refused at the handshake.
        other_ca = InternalCA()
        other_root = await other_ca.create_root()
        stranger = await _node(other_ca, other_root.cert_pem, "mgr-x", "swarm-manager")
        intruder = TLSMaterial(root_pem=root.cert_pem, cert_pem=stranger.cert_pem, key_pem=stranger.key_pem)
        with pytest.raises(RPCError) as caught:
            await transport.call(server.address, "/shoal.Ctl/Who", b"", tls=intruder, timeout=10)
        assert caught.value.code is StatusCode.UNAVAILABLE
        assert len(seen) == 2
    finally:
        await server.stop(0)
        await transport.close()
