"""Issue 17: a worker now serves one RPC, its tasks' logs (``rpc.TASK_LOGS``), to managers only.

Real daemons, real mutual TLS over the gRPC transport, each call made with a node's own
certificate: a manager's passes (an unknown task is NOT_FOUND, past authorisation), a worker's
and a certificate-less caller are refused, a caller must name the worker's node ID as the
server name (the worker's certificate does not say ``swarm-manager``, so nothing that expects a
manager can be pointed at a worker), and the worker serves nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from harness import ShoalNode, start_cluster
from shoal import identity, rpc
from shoal.daemon.state import CERTS_DIR
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial
from shoal_transport_grpc import GrpcTransport

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]


def certificate(node: ShoalNode) -> TLSMaterial:
    creds = identity.load_credentials(node.state_dir / CERTS_DIR)
    return TLSMaterial(root_pem=creds.root_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)


async def first_message(
    addr: str, method: str, request: bytes, tls: TLSMaterial, server_name: str
) -> tuple[StatusCode, str]:
    transport = GrpcTransport()
    try:
        stream = transport.stream(addr, method, request, tls=tls, timeout=10, server_name=server_name)
        async for _ in stream:
            return StatusCode.OK, ""
        return StatusCode.OK, ""
    except RPCError as exc:
        return exc.code, exc.message
    finally:
        await transport.close()


def test_worker_serves_task_logs_to_managers_only(node_factory: Factory) -> None:
    manager, (worker,) = start_cluster(node_factory, "w1")
    worker_id = worker.node_id()
    request = rpb.TaskLogsRequest(task_id="no-such-task").SerializeToString()

    def outcome(
        tls: TLSMaterial, server_name: str = worker_id, method: str = rpc.TASK_LOGS
    ) -> tuple[StatusCode, str]:
        return asyncio.run(first_message(worker.addr, method, request, tls, server_name))

    manager_tls, worker_tls = certificate(manager), certificate(worker)
    code, message = outcome(manager_tls)
    assert code == StatusCode.NOT_FOUND and f"not on node {worker_id}" in message, (code, message)
    code, message = outcome(worker_tls)
    assert code == StatusCode.PERMISSION_DENIED and "needs swarm-manager" in message, (code, message)
    anonymous = TLSMaterial(root_pem=manager_tls.root_pem)
    assert outcome(anonymous)[0] == StatusCode.PERMISSION_DENIED
    # The worker's certificate names its node, not swarm-manager: a caller expecting a manager
    # (an agent, a joiner, another manager's store) cannot be pointed at a worker.
    code, message = outcome(manager_tls, server_name="")
    assert code == StatusCode.UNAVAILABLE and "TLS handshake failed" in message, (code, message)
    # Nothing but the task logs is served on a worker.
    code, _ = outcome(manager_tls, method=rpc.SESSION)
    assert code == StatusCode.UNIMPLEMENTED
