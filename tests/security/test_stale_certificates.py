"""Issue 13, defect 1: a removed or demoted node's old certificate keeps no power it lost.

Real daemons, real mutual TLS over the gRPC transport. The certificate and key a node held
are copied from its state dir before it is demoted or removed, then presented to every RPC
method of the node API, on the leader and on a follower (a replica that may lag):

- a demoted manager's certificate counts as a worker's (dispatcher yes; control, store no;
  a renewal gives it a worker certificate);
- a removed manager (``node rm`` after demotion, or left out by ``--force-new-cluster``) and a
  removed worker are refused by every method but the public root-certificate fetch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from harness import ShoalNode, wait_until
from managers import leader, old_certificate, role_on_disk, three_managers_and_a_worker
from shoal import identity, rpc
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial
from shoal_store_raft import wire
from shoal_store_raft.peernet import RAFT_DIRECT, RAFT_HELLO, RAFT_PULL, RAFT_STEP
from shoal_transport_grpc import GrpcTransport

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]
#: How long a stream may stay silent before the probe counts it as open (admitted).
STREAM_WAIT = 10.0
#: Methods no node serves (none today: every one is probed).
NOT_SERVED: set[str] = set()
#: What the default store (raft) serves to the other managers under the store-peer rule.
STORE_METHODS = {RAFT_STEP, RAFT_PULL, RAFT_HELLO, RAFT_DIRECT}
DENIED = StatusCode.PERMISSION_DENIED


def requests() -> dict[str, bytes]:
    """One request per method, harmless if (wrongly) accepted: a bogus session, an empty store
    step from a member that does not exist, a store join the leader would reject as malformed."""
    control = rpb.ControlRequest(
        method="swarm.join_token", json_body=json.dumps({"role": "manager"}).encode()
    )
    renew = rpb.IssueNodeCertificateRequest(csr=identity.build_csr(identity.generate_key()))
    step = wire.encode(wire.Envelope(from_member=0xDEAD, from_addr="127.0.0.1:9"))
    return {
        rpc.GET_ROOT_CA: b"",
        rpc.ISSUE_NODE_CERTIFICATE: renew.SerializeToString(),
        rpc.CONTROL: control.SerializeToString(),
        rpc.CONTROL_STREAM: control.SerializeToString(),
        rpc.SESSION: rpb.SessionRequest().SerializeToString(),
        rpc.HEARTBEAT: rpb.HeartbeatRequest(session_id="probe").SerializeToString(),
        rpc.ASSIGNMENTS: rpb.AssignmentsRequest(session_id="probe").SerializeToString(),
        rpc.UPDATE_TASK_STATUS: rpb.UpdateTaskStatusRequest(session_id="probe").SerializeToString(),
        RAFT_STEP: step,
        RAFT_PULL: step,
        RAFT_HELLO: step,
        RAFT_DIRECT: step,
        rpc.STORE_JOIN: rpb.StoreJoinRequest(node_id="probe").SerializeToString(),
        rpc.TASK_LOGS: rpb.TaskLogsRequest(task_id="probe").SerializeToString(),
        # since 0: the ring's recent events at once, so an admitted call answers quickly
        rpc.EVENTS: rpb.ControlRequest(method="events", json_body=b'{"since": 0}').SerializeToString(),
    }


STREAMS = {rpc.SESSION, rpc.ASSIGNMENTS, RAFT_PULL, rpc.TASK_LOGS, rpc.EVENTS, rpc.CONTROL_STREAM}


async def call(addr: str, method: str, tls: TLSMaterial) -> tuple[StatusCode, bytes]:
    """The outcome of one call (a stream: of its first message)."""
    request = requests()[method]
    transport = GrpcTransport()
    try:
        if method in STREAMS:
            messages = transport.stream(addr, method, request, tls=tls)
            try:
                first = await asyncio.wait_for(messages.__anext__(), STREAM_WAIT)
            except TimeoutError:
                return StatusCode.OK, b""  # open and waiting: admitted
            finally:
                aclose = getattr(messages, "aclose", None)
                if aclose is not None:
                    await aclose()
            return StatusCode.OK, first
        return StatusCode.OK, await transport.call(addr, method, request, tls=tls, timeout=STREAM_WAIT)
    except RPCError as exc:
        return exc.code, exc.message.encode()
    finally:
        await transport.close()


def worker_task_logs(worker: ShoalNode, worker_id: str, tls: TLSMaterial) -> StatusCode:
    """The outcome of asking a worker for a task's logs (its certificate names its node ID)."""

    async def ask() -> StatusCode:
        transport = GrpcTransport()
        try:
            messages = transport.stream(
                worker.addr, rpc.TASK_LOGS, requests()[rpc.TASK_LOGS], tls=tls, server_name=worker_id
            )
            async for _ in messages:
                break
            return StatusCode.OK
        except RPCError as exc:
            return exc.code
        finally:
            await transport.close()

    return asyncio.run(ask())


def probe(addr: str, tls: TLSMaterial, methods: set[str] | None = None) -> dict[str, StatusCode]:
    """Every RPC method of the node API (or ``methods``) called with ``tls``: its outcome code."""
    assert set(requests()) == (set(rpc.ACCESS) - NOT_SERVED) | STORE_METHODS, (
        "a new RPC method needs a probe here"
    )
    wanted = sorted(methods or requests())
    return {m: asyncio.run(call(addr, m, tls))[0] for m in wanted}


def refused_everywhere(addr: str, tls: TLSMaterial) -> dict[str, StatusCode]:
    """Methods that did not refuse ``tls`` (empty when every one but the public fetch did)."""
    outcome = probe(addr, tls)
    assert outcome.pop(rpc.GET_ROOT_CA) == StatusCode.OK
    return {m: code for m, code in outcome.items() if code != DENIED}


def wait_refused(addr: str, tls: TLSMaterial, what: str) -> None:
    """A follower applies a removal a moment after the leader: wait for it, with a deadline."""
    last: dict[str, StatusCode] = {}

    def refused() -> bool:
        last.clear()
        last.update(refused_everywhere(addr, tls))
        return not last

    try:
        wait_until(refused, 30, interval=0.5, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: still accepted by {last}") from None


def test_demoted_and_removed_certificates_lose_their_power(node_factory: Factory) -> None:
    m1, m2, m3, w1 = three_managers_and_a_worker(node_factory)
    m2_cert, m3_cert, w1_cert = old_certificate(m2), old_certificate(m3), old_certificate(w1)
    m2_id, m3_id = m2.node_id(), m3.node_id()  # the probe's session clears m3's hostname
    works = {rpc.CONTROL, rpc.CONTROL_STREAM}
    assert probe(m1.addr, m3_cert, works) == dict.fromkeys(works, StatusCode.OK)  # the probe works
    w1_id = w1.node_id()
    # A worker serves its tasks' logs to the current managers: m3's certificate passes its
    # check (an unknown task is NOT_FOUND) once w1 has heard from the leader...
    wait_until(
        lambda: worker_task_logs(w1, w1_id, m3_cert) == StatusCode.NOT_FOUND,
        30,
        what="w1 to serve task logs to manager m3",
    )

    # --- a demoted manager: its manager certificate counts as a worker's
    m1.ok("node", "demote", "m3")
    wait_until(lambda: role_on_disk(m3) == rpc.WORKER_OU, 60, what="m3 to renew as a worker")
    m3.kill()
    lead = leader([m1, m2])
    demoted = probe(lead.addr, m3_cert)
    for method in (
        rpc.CONTROL,
        rpc.CONTROL_STREAM,
        *STORE_METHODS,
        rpc.STORE_JOIN,
        rpc.TASK_LOGS,
        rpc.EVENTS,
    ):
        assert demoted[method] == DENIED, (method, demoted)
    # A worker may use the dispatcher: past authorisation (a bogus session is NOT_FOUND; should
    # leadership move meanwhile, UNAVAILABLE), never refused.
    for method in (rpc.SESSION, rpc.HEARTBEAT, rpc.ASSIGNMENTS, rpc.UPDATE_TASK_STATUS):
        assert demoted[method] != DENIED, (method, demoted)
    assert demoted[rpc.SESSION] == StatusCode.OK, demoted
    # ...and the worker, which holds no store, refuses it once the leader no longer names m3.
    wait_until(
        lambda: worker_task_logs(w1, w1_id, m3_cert) == DENIED,
        30,
        what="w1 to refuse the demoted manager's certificate for task logs",
    )

    # Renewal gives it a worker certificate (retried only if leadership moved meanwhile).
    def renew() -> tuple[StatusCode, bytes] | None:
        outcome = asyncio.run(call(leader([m1, m2]).addr, rpc.ISSUE_NODE_CERTIFICATE, m3_cert))
        return None if outcome[0] == StatusCode.UNAVAILABLE else outcome

    renewal = wait_until(renew, 30, what="a renewal with the demoted manager's certificate")
    assert renewal[0] == StatusCode.OK, renewal
    renewed = rpb.IssueNodeCertificateResponse.FromString(renewal[1]).certificate
    assert identity.parse_identity(renewed).role == rpc.WORKER_OU
    follower = probe(m2.addr, m3_cert, STORE_METHODS)
    assert set(follower.values()) == {DENIED}, follower

    # --- removed: the demoted manager, then a worker
    m1.ok("node", "rm", "--force", m3_id)
    for manager in (m1, m2):
        wait_refused(manager.addr, m3_cert, f"the removed manager's certificate on {manager.name}")
    w1.kill()
    m1.ok("node", "rm", "--force", "w1")
    for manager in (m1, m2):  # a follower used to hand it the manager list
        wait_refused(manager.addr, w1_cert, f"the removed worker's certificate on {manager.name}")

    # --- a manager left out by --force-new-cluster, then removed
    m2.kill()
    m1.ok("swarm", "init", "--force-new-cluster")
    wait_refused(m1.addr, m2_cert, "the certificate of a manager left out by --force-new-cluster")
    m1.ok("node", "rm", "--force", m2_id)
    wait_refused(m1.addr, m2_cert, "the certificate of a manager removed after --force-new-cluster")
    # Nothing the refused calls asked for happened, and the swarm still works.
    assert {r["Hostname"] for r in m1.ok("node", "ls", "--format", "json").json_lines()} == {"m1"}
    m1.ok("service", "create", "--detach", "--name", "after", "shoal-busybox:1", "sleep", "3600")
