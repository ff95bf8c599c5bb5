"""The CA server: hands out the root, admits nodes with join tokens, renews certificates.

Anyone may fetch the root certificate (a joiner checks it against its token's digest before
trusting it). Issuing a certificate takes either a join token (a new node; the token decides the
role, compared in constant time) or a valid node certificate of this cluster (a renewal, for
the node named in it, with the role the cluster has for that node). The CA provider signs; the
subject is always CN = node ID, OU = role, O = cluster ID.
"""

from __future__ import annotations

import logging
import os

from shoal import identity, rpc, tokens
from shoal.ids import new_id
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.ca import CAProvider
from shoal.roles.store import StoreUnavailable
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode
from shoal.store.memory import ObjectStore, Tx, copy

log = logging.getLogger("shoal.ca")

MIN_CERT_EXPIRY = 3600.0
#: Tests may lower the floor to watch renewals happen; never set it on a real cluster.
TEST_FLOOR_ENV = "SHOAL_UNSAFE_TEST_MIN_CERT_EXPIRY"


def min_cert_expiry() -> float:
    """Swarm's 1 hour minimum, unless a test lowered it on purpose (logged loudly)."""
    override = os.environ.get(TEST_FLOOR_ENV)
    if not override:
        return MIN_CERT_EXPIRY
    log.warning("%s=%s lowers the certificate expiry floor: for tests only", TEST_FLOOR_ENV, override)
    return float(override)


class CAServer:
    """Serves GetRootCACertificate and IssueNodeCertificate on managers."""

    def __init__(self, store: ObjectStore, ca: CAProvider, cluster_id: str) -> None:
        self.store = store
        self.ca = ca
        self.cluster_id = cluster_id

    def _cluster(self) -> pb.Cluster:
        cluster = self.store.view.cluster()
        if cluster is None:
            raise RPCError(StatusCode.UNAVAILABLE, "the swarm has no cluster object yet")
        return cluster

    async def get_root(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        return rpb.GetRootCAResponse(certificate=self._cluster().root_ca.ca_cert).SerializeToString()

    async def issue(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        req = rpb.IssueNodeCertificateRequest.FromString(request)
        cluster = self._cluster()
        expiry = max(cluster.spec.ca_config.node_cert_expiry, min_cert_expiry())
        if peer is None:
            return await self._join(req, cluster, expiry)
        return await self._renew(req, cluster, peer, expiry)

    async def _sign(self, csr: bytes, node_id: str, role: str, expiry: float) -> bytes:
        try:
            issued = await self.ca.sign(
                csr, node_id=node_id, role=role, cluster_id=self.cluster_id, expiry_seconds=expiry
            )
        except ValueError as exc:
            raise RPCError(StatusCode.INVALID_ARGUMENT, f"certificate request refused: {exc}") from None
        except RuntimeError as exc:
            raise RPCError(StatusCode.UNAVAILABLE, f"the CA could not sign: {exc}") from None
        return issued.presented_pem  # leaf + intermediates: the node must present both

    def _role_for(self, token: str, cluster: pb.Cluster) -> pb.NodeSpec.Role.ValueType:
        try:
            parsed = tokens.parse(token)
        except tokens.TokenError as exc:
            raise RPCError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        if parsed.digest != tokens.root_digest(cluster.root_ca.ca_cert):
            raise RPCError(
                StatusCode.PERMISSION_DENIED, "the join token is for another swarm (its CA digest differs)"
            )
        join_tokens = cluster.root_ca.join_tokens
        worker = tokens.matches(token, join_tokens.worker)
        manager = tokens.matches(token, join_tokens.manager)
        if manager:
            return pb.NodeSpec.MANAGER
        if worker:
            return pb.NodeSpec.WORKER
        raise RPCError(
            StatusCode.PERMISSION_DENIED,
            "invalid join token: it was rotated or never issued; get the current one with `shoal swarm join-token`",
        )

    async def _join(self, req: rpb.IssueNodeCertificateRequest, cluster: pb.Cluster, expiry: float) -> bytes:
        if not req.token:
            raise RPCError(StatusCode.PERMISSION_DENIED, "a join token is required to join this swarm")
        role = self._role_for(req.token, cluster)
        ou = rpc.MANAGER_OU if role == pb.NodeSpec.MANAGER else rpc.WORKER_OU
        node_id = new_id()
        cert = await self._sign(req.csr, node_id, ou, expiry)
        # A manager's node object is written now with its role; it becomes a store member
        # (and shows a MANAGER STATUS) once it asks the leader to add it (``StoreJoin``).
        node = pb.Node(id=node_id, role=role)
        node.spec.desired_role = role
        node.spec.membership = pb.NodeSpec.ACCEPTED
        node.spec.availability = req.availability
        node.status.state = pb.NodeStatus.UNKNOWN
        node.certificate.role = role
        node.certificate.state = pb.Certificate.ISSUED
        node.certificate.cn = node_id
        node.certificate.certificate = cert
        node.certificate.not_after = identity.cert_not_after(cert).timestamp()
        try:
            await self.store.update(lambda tx: tx.create(node))
        except StoreUnavailable as exc:
            raise RPCError(StatusCode.UNAVAILABLE, str(exc)) from None
        log.info("node %s joined as a %s", node_id, "manager" if role == pb.NodeSpec.MANAGER else "worker")
        return rpb.IssueNodeCertificateResponse(
            node_id=node_id,
            certificate=cert,
            root_ca=cluster.root_ca.ca_cert,
            cluster_id=self.cluster_id,
            plugins=cluster.plugins,
        ).SerializeToString()

    async def _record_failure(self, node_id: str, message: str) -> None:
        """Show a failed issuance in ``node inspect`` (Certificate.state FAILED, with the CA's error)."""

        def record(tx: Tx) -> None:
            node = tx.node(node_id)
            if node is None:
                return
            node = copy(node)
            node.certificate.state = pb.Certificate.FAILED
            node.certificate.err = message
            tx.update(node)

        try:
            await self.store.update(record)
        except StoreUnavailable as exc:
            log.warning("could not record the failed certificate of node %s: %s", node_id, exc)

    async def _renew(
        self, req: rpb.IssueNodeCertificateRequest, cluster: pb.Cluster, peer: PeerIdentity, expiry: float
    ) -> bytes:
        # rpc.guard admitted the caller (Access.JOIN: a member, not on the removed list); the
        # role signed is the store's, so a demoted manager renews as a worker.
        node = self.store.view.nodes.get(peer.node_id)
        if node is None:
            raise RPCError(
                StatusCode.PERMISSION_DENIED,
                f"node {peer.node_id} was removed from the swarm; leave and join again with a token",
            )
        # A promoted worker gets its manager certificate here (and becomes a manager); a
        # demoted manager was already made a worker, after it left the store's membership.
        promote = node.role == pb.NodeSpec.WORKER and node.spec.desired_role == pb.NodeSpec.MANAGER
        manager = node.role == pb.NodeSpec.MANAGER or promote
        role = rpc.MANAGER_OU if manager else rpc.WORKER_OU
        try:
            cert = await self._sign(req.csr, peer.node_id, role, expiry)
        except RPCError as exc:
            await self._record_failure(peer.node_id, exc.message)
            raise

        def record(tx: Tx) -> None:
            current = tx.node(peer.node_id)
            if current is None:
                return
            current = copy(current)
            current.certificate.certificate = cert
            current.certificate.state = pb.Certificate.ISSUED
            current.certificate.err = ""
            current.certificate.not_after = identity.cert_not_after(cert).timestamp()
            if promote:
                current.role = pb.NodeSpec.MANAGER
                current.certificate.role = pb.NodeSpec.MANAGER
            elif not manager:
                current.certificate.role = pb.NodeSpec.WORKER
            tx.update(current)

        try:
            await self.store.update(record)
        except StoreUnavailable as exc:
            raise RPCError(StatusCode.UNAVAILABLE, str(exc)) from None
        log.info("renewed the certificate of node %s (%s)", peer.node_id, role)
        return rpb.IssueNodeCertificateResponse(
            node_id=peer.node_id,
            certificate=cert,
            root_ca=cluster.root_ca.ca_cert,
            cluster_id=self.cluster_id,
            plugins=cluster.plugins,
        ).SerializeToString()
