"""A hollow node's admission: the join protocol of ``swarm join``, for a node with no daemon.

The same steps and checks as the daemon's join (``shoal.daemon.node``): the root CA fetched
without trusting it and checked against the token's digest, a key that never leaves the node,
a CSR sent with the token over TLS checked against that root, and the issued certificate
verified to chain to the root and to name the node, the cluster and a worker role.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from shoal import identity, rpc, tokens
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import RPCError, TLSMaterial, TransportProvider

JOIN_TIMEOUT = 60.0


class JoinRefused(Exception):
    """The node could not join: one line naming the manager and why."""


@dataclass(frozen=True)
class Joined:
    """What a node holds after joining."""

    node_id: str
    cluster_id: str
    credentials: identity.NodeCredentials

    def tls(self) -> TLSMaterial:
        creds = self.credentials
        return TLSMaterial(root_pem=creds.root_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)


async def join(transport: TransportProvider, manager: str, token: str) -> Joined:
    """Join the swarm through ``manager`` with a worker ``token``; ``JoinRefused`` otherwise."""
    try:
        parsed = tokens.parse(token)
    except tokens.TokenError as exc:
        raise JoinRefused(str(exc)) from None
    try:
        raw = await transport.call(
            manager, rpc.GET_ROOT_CA, b"", tls=TLSMaterial(root_pem=b""), timeout=JOIN_TIMEOUT
        )
        root_pem = rpb.GetRootCAResponse.FromString(raw).certificate
    except (RPCError, DecodeError) as exc:
        raise JoinRefused(f"cannot join through {manager}: {getattr(exc, 'message', exc)}") from None
    if not root_pem or tokens.root_digest(root_pem) != parsed.digest:
        raise JoinRefused(f"the root CA presented by {manager} does not match the join token's digest")
    key_pem = identity.generate_key()
    request = rpb.IssueNodeCertificateRequest(csr=identity.build_csr(key_pem), token=token)
    try:
        raw = await transport.call(
            manager,
            rpc.ISSUE_NODE_CERTIFICATE,
            request.SerializeToString(),
            tls=TLSMaterial(root_pem=root_pem),
            timeout=JOIN_TIMEOUT,
        )
    except RPCError as exc:
        raise JoinRefused(f"the manager at {manager} refused to admit this node: {exc.message}") from None
    issued = rpb.IssueNodeCertificateResponse.FromString(raw)
    identity.verify_chain(issued.certificate, root_pem)
    peer = identity.parse_identity(issued.certificate)
    if peer.node_id != issued.node_id or peer.cluster_id != issued.cluster_id or peer.role != rpc.WORKER_OU:
        raise JoinRefused(
            f"the certificate issued by {manager} is not a worker's of this node (use a worker token)"
        )
    creds = identity.NodeCredentials(key_pem=key_pem, cert_pem=issued.certificate, root_pem=root_pem)
    return Joined(node_id=issued.node_id, cluster_id=issued.cluster_id, credentials=creds)
