"""Names of the kernel's node-to-node RPC methods, and who may call them.

Authorisation is by the peer certificate's OU (role) and O (cluster): workers reach only
the dispatcher and their own certificate renewal; the control API and CA administration
need a manager certificate; unauthenticated callers reach only the join calls.
"""

from __future__ import annotations

from shoal.roles.transport import PeerIdentity, RPCError, StatusCode

SESSION = "/shoal.Dispatcher/Session"
HEARTBEAT = "/shoal.Dispatcher/Heartbeat"
ASSIGNMENTS = "/shoal.Dispatcher/Assignments"
UPDATE_TASK_STATUS = "/shoal.Dispatcher/UpdateTaskStatus"
GET_ROOT_CA = "/shoal.CA/GetRootCACertificate"
ISSUE_NODE_CERTIFICATE = "/shoal.NodeCA/IssueNodeCertificate"
CONTROL = "/shoal.Control/Call"
TASK_LOGS = "/shoal.Logs/TaskLogs"
STORE_STEP = "/shoal.Store/Step"
STORE_JOIN = "/shoal.Store/Join"
STORE_PULL = "/shoal.Store/Pull"

MANAGER_OU = "swarm-manager"
WORKER_OU = "swarm-worker"


def authorize(peer: PeerIdentity | None, cluster_id: str, *, managers_only: bool) -> PeerIdentity:
    """Return the caller's identity if it may call a method, else raise PERMISSION_DENIED."""
    if peer is None:
        raise RPCError(StatusCode.PERMISSION_DENIED, "a node certificate is required for this call")
    if peer.cluster_id != cluster_id:
        raise RPCError(
            StatusCode.PERMISSION_DENIED,
            f"certificate of node {peer.node_id} belongs to cluster {peer.cluster_id!r}, not this one",
        )
    allowed = (MANAGER_OU,) if managers_only else (MANAGER_OU, WORKER_OU)
    if peer.role not in allowed:
        raise RPCError(
            StatusCode.PERMISSION_DENIED,
            f"role {peer.role!r} of node {peer.node_id} may not call this method "
            f"(needs {' or '.join(allowed)})",
        )
    return peer
