"""Names of the kernel's node-to-node RPC methods, who may call each, and the one check.

Every method has an access rule in ``ACCESS``; ``guard`` wraps a handler table so that each
call (and each message of a stream) passes ``authorize`` first, and refuses to wrap a method
that has no rule, so a new RPC cannot be served without an authorisation decision.

``authorize`` trusts the certificate only as far as the store agrees with it: the caller's
cluster (O), that its node is not on the cluster's removed-node list (written in the same
transaction that removes a node, so every replica refuses it once it knows of the removal),
that the node exists, and its *effective* role: the lesser of the certificate's OU and the
node's current role in the store. A demoted manager's certificate counts as a worker's until
it renews (and renewal gives it a worker certificate); a removed node's counts for nothing.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping

from shoal.proto import objects_pb2 as pb
from shoal.roles.store import STORE_PEER_METHOD_PREFIX
from shoal.roles.transport import Handler, PeerIdentity, RPCError, StatusCode, StreamHandler
from shoal.store.memory import ReadView, Tx, copy

SESSION = "/shoal.Dispatcher/Session"
HEARTBEAT = "/shoal.Dispatcher/Heartbeat"
ASSIGNMENTS = "/shoal.Dispatcher/Assignments"
UPDATE_TASK_STATUS = "/shoal.Dispatcher/UpdateTaskStatus"
GET_ROOT_CA = "/shoal.CA/GetRootCACertificate"
ISSUE_NODE_CERTIFICATE = "/shoal.NodeCA/IssueNodeCertificate"
CONTROL = "/shoal.Control/Call"
#: ``CONTROL``'s answer as the leader writes it, in parts: a follower relays a ``service ps``
#: to its CLI as the leader's pieces come (``manager/controlrelay.py``).
CONTROL_STREAM = "/shoal.Control/CallStream"
#: ``shoal events`` from a manager's own ring (``manager/events.py``); any manager serves it.
EVENTS = "/shoal.Control/Events"
TASK_LOGS = "/shoal.Logs/TaskLogs"
#: A manager asks the leader to add it to the store's group (the leader calls the store's
#: ``add_member``). The store's own replication methods are not listed here: whatever the
#: provider serves under ``STORE_PEER_METHOD_PREFIX`` gets the ``STORE_PEER`` rule.
STORE_JOIN = "/shoal.Store/Join"

MANAGER_OU = "swarm-manager"
WORKER_OU = "swarm-worker"

#: Said to a manager the others no longer count as one (its store stops and tells the daemon
#: when an answer carries "no longer a member").
REMOVED_MESSAGE = (
    "this manager is no longer a member of the swarm's managers (it was demoted or removed, or the "
    "swarm was recovered with --force-new-cluster): its state is out of date. Run "
    '"shoal swarm leave --force" on it, then join it again'
)


class Access(enum.Enum):
    """Who may call a method."""

    #: Anyone, no certificate: the root certificate a joiner checks against its token's digest.
    PUBLIC = "public"
    #: No certificate: a join (the CA server checks the token). With one: as ``NODE``.
    JOIN = "join"
    #: A node of this swarm, worker or manager.
    NODE = "node"
    #: A manager of this swarm now: its certificate and the store both say manager.
    MANAGER = "manager"
    #: A manager certificate whose node this replica does not record as a worker or removed.
    #: A replica that lags may not know a manager that just joined or was promoted; it must
    #: not turn that member away, so an unknown node passes (a removed one is on the list).
    STORE_PEER = "store-peer"


#: The access rule of every RPC method the kernel serves.
ACCESS: Mapping[str, Access] = {
    GET_ROOT_CA: Access.PUBLIC,
    ISSUE_NODE_CERTIFICATE: Access.JOIN,
    SESSION: Access.NODE,
    HEARTBEAT: Access.NODE,
    ASSIGNMENTS: Access.NODE,
    UPDATE_TASK_STATUS: Access.NODE,
    # A manager reading a task's output for ``service logs`` from the node that runs it.
    TASK_LOGS: Access.MANAGER,
    CONTROL: Access.MANAGER,
    CONTROL_STREAM: Access.MANAGER,
    # The swarm's events name every service, node, secret and network: managers only.
    EVENTS: Access.MANAGER,
    STORE_JOIN: Access.STORE_PEER,
}


def _denied(message: str) -> RPCError:
    return RPCError(StatusCode.PERMISSION_DENIED, message)


def effective_role(peer: PeerIdentity, node: pb.Node) -> str:
    """The lesser of the certificate's role and the node's current role in the store."""
    if peer.role == MANAGER_OU and node.role == pb.NodeSpec.MANAGER:
        return MANAGER_OU
    return WORKER_OU


def _demoted(node: pb.Node) -> bool:
    """Recorded as a worker that is not about to become a manager (a promotion sets the desired
    role first, and a lagging replica may not have seen the role change that follows)."""
    return node.role == pb.NodeSpec.WORKER and node.spec.desired_role == pb.NodeSpec.WORKER


def authorize(
    peer: PeerIdentity | None, access: Access, *, cluster_id: str, view: ReadView
) -> PeerIdentity | None:
    """Return the caller's identity if it may call a method with rule ``access`` (``None`` for
    an anonymous caller where that is allowed), else raise PERMISSION_DENIED."""
    if access is Access.PUBLIC:
        return peer
    if peer is None:
        if access is Access.JOIN:
            return None
        raise _denied("a node certificate is required for this call")
    if peer.cluster_id != cluster_id:
        raise _denied(
            f"certificate of node {peer.node_id} belongs to cluster {peer.cluster_id!r}, not this one"
        )
    cluster = view.cluster()
    if cluster is not None and peer.node_id in cluster.removed_nodes:
        raise _denied(
            f"node {peer.node_id} was removed from the swarm and is no longer a member: its certificate "
            'is refused. Run "shoal swarm leave --force" on it, then join it again'
        )
    needs_manager = access in (Access.MANAGER, Access.STORE_PEER)
    allowed = (MANAGER_OU,) if needs_manager else (MANAGER_OU, WORKER_OU)
    if peer.role not in allowed:
        raise _denied(
            f"role {peer.role!r} of node {peer.node_id} may not call this method (needs {' or '.join(allowed)})"
        )
    node = view.nodes.get(peer.node_id)
    if access is Access.STORE_PEER:
        if node is not None and _demoted(node):
            raise _denied(f"node {peer.node_id}: {REMOVED_MESSAGE}")
        return peer
    if node is None:
        raise _denied(
            f"node {peer.node_id} is not a member of this swarm (it was removed); "
            "run 'shoal swarm leave' on it and join again"
        )
    if access is Access.MANAGER and effective_role(peer, node) != MANAGER_OU:
        raise _denied(
            f"node {peer.node_id} is not a manager of this swarm now (it was demoted): its "
            f"{MANAGER_OU} certificate counts as a worker's until it renews"
        )
    return peer


def caller(peer: PeerIdentity | None) -> PeerIdentity:
    """The identity of a caller ``guard`` admitted to a method that needs a certificate."""
    if peer is None:
        raise _denied("a node certificate is required for this call")
    return peer


#: Handler tables as ``guard`` takes and returns them (method name -> handler).
UnaryTable = dict[str, Handler]
StreamTable = dict[str, StreamHandler]


class UnguardedMethod(ValueError):
    """A handler for a method with no access rule in ``ACCESS``."""


Check = Callable[[str, PeerIdentity | None], None]


def checker(cluster_id: str, view: Callable[[], ReadView]) -> Check:
    """``authorize`` bound to a cluster and a replica's current view, by method name."""

    def check(method: str, peer: PeerIdentity | None) -> None:
        authorize(peer, _rule_for(method), cluster_id=cluster_id, view=view())

    return check


def certificate_checker(cluster_id: str, current_managers: Callable[[], Collection[str] | None]) -> Check:
    """The check of a node that holds no store (a worker serving its tasks' logs): the verified
    certificate must be of this cluster and carry the role the rule needs, and for a
    manager-only rule its node must be one of ``current_managers()``, the managers the leader
    last named in this node's session. A demoted or removed manager's old certificate is thus
    refused here as soon as the worker hears of the change; before the worker has heard from a
    leader at all (``None``), manager-only calls are refused."""

    def check(method: str, peer: PeerIdentity | None) -> None:
        access = _rule_for(method)
        if access is Access.PUBLIC or (peer is None and access is Access.JOIN):
            return
        if peer is None:
            raise _denied("a node certificate is required for this call")
        if peer.cluster_id != cluster_id:
            raise _denied(
                f"certificate of node {peer.node_id} belongs to cluster {peer.cluster_id!r}, not this one"
            )
        if access in (Access.MANAGER, Access.STORE_PEER):
            if peer.role != MANAGER_OU:
                raise _denied(
                    f"role {peer.role!r} of node {peer.node_id} may not call this method (needs {MANAGER_OU})"
                )
            managers = current_managers()
            if managers is None:
                raise _denied("this node has not yet heard from a leader which nodes are managers")
            if peer.node_id not in managers:
                raise _denied(
                    f"node {peer.node_id} is not a manager of this swarm now (it was demoted or removed)"
                )

    return check


def _rule_for(method: str) -> Access:
    """``ACCESS[method]``; the store provider's own methods are store-peer calls."""
    access = ACCESS.get(method)
    if access is None and method.startswith(STORE_PEER_METHOD_PREFIX):
        return Access.STORE_PEER
    if access is None:
        raise UnguardedMethod(f"RPC method {method} has no access rule: add one to shoal.rpc.ACCESS")
    return access


def _guard_unary(method: str, handler: Handler, check: Check) -> Handler:
    async def guarded(request: bytes, peer: PeerIdentity | None) -> bytes:
        check(method, peer)
        return await handler(request, peer)

    return guarded


def _guard_stream(method: str, handler: StreamHandler, check: Check) -> StreamHandler:
    async def guarded(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        check(method, peer)
        messages = handler(request, peer)
        try:
            async for message in messages:
                # Checked again per message: a node removed or demoted while its stream is open
                # loses it at the next message, not when it reconnects.
                check(method, peer)
                yield message
        finally:
            aclose = getattr(messages, "aclose", None)
            if aclose is not None:
                await aclose()

    return guarded


def guard(
    unary: Mapping[str, Handler], streams: Mapping[str, StreamHandler], check: Check
) -> tuple[UnaryTable, StreamTable]:
    """The handler tables with ``check`` in front of every method (UnguardedMethod for a
    method without an access rule: serving it would skip authorisation)."""
    for method in (*unary, *streams):
        _rule_for(method)
    return (
        {m: _guard_unary(m, h, check) for m, h in unary.items()},
        {m: _guard_stream(m, h, check) for m, h in streams.items()},
    )


def record_removed(tx: Tx, node_ids: Iterable[str], reason: str) -> None:
    """Put nodes on the cluster's removed-node list, in the transaction that removes them."""
    ids = list(node_ids)
    cluster = tx.cluster()
    if cluster is None or not ids:
        return
    cluster = copy(cluster)
    now = time.time()
    for node_id in ids:
        cluster.removed_nodes[node_id].CopyFrom(pb.RemovedNode(removed_at=now, reason=reason))
    tx.update(cluster)
