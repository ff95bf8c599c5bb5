"""A secure multi-node cluster: real daemons on distinct loopback addresses sharing one engine.

Join tokens, mutual-TLS identity and authorisation, certificate renewal, heartbeats and node
failure, drain/pause, node management and constraints over live node objects.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import signal
import stat
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from engines import Engine, engine_for
from etcdcluster import STORES
from harness import TEST_IMAGE, ShoalNode, wait_until
from shoal.identity import load_credentials

pytestmark = [pytest.mark.cluster]

TOKEN = re.compile(r"^SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}$")
Factory = Callable[..., ShoalNode]


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def start_manager(
    node_factory: Factory, heartbeat: str = "1s", env: dict[str, str] | None = None
) -> ShoalNode:
    manager = node_factory(name="mgr", host="127.0.0.1", env=env).start()
    manager.init()
    manager.ok("swarm", "update", "--dispatcher-heartbeat", heartbeat)
    return manager


def start_worker(
    node_factory: Factory, manager: ShoalNode, name: str, index: int, *join_args: str
) -> ShoalNode:
    worker = node_factory(name=name, host=f"127.0.0.{index}").start()
    worker.join(manager, "worker", *join_args)
    return worker


def node_rows(manager: ShoalNode) -> dict[str, dict[str, object]]:
    return {str(row["Hostname"]): row for row in manager.ok("node", "ls", "--format", "json").json_lines()}


def wait_status(manager: ShoalNode, hostname: str, status: str, timeout: float = 30) -> None:
    wait_until(
        lambda: node_rows(manager).get(hostname, {}).get("Status") == status,
        timeout,
        what=f"{hostname} to be {status}",
    )


def running_by_node(manager: ShoalNode, service: str) -> Counter[str]:
    return Counter(t["Node"] for t in manager.running(service))


@pytest.fixture
def docker_engine() -> Engine:
    engine = engine_for("docker")
    engine.require_image(TEST_IMAGE)
    return engine


# --------------------------------------------------------------------------- tokens and joining


def test_join_tokens_and_worker_identity(node_factory: Factory) -> None:
    manager = start_manager(node_factory)
    full = manager.ok("swarm", "join-token", "worker").stdout
    token = manager.ok("swarm", "join-token", "-q", "worker").stdout.strip()
    assert TOKEN.match(token)
    assert f"shoal swarm join --token {token} {manager.addr}" in full
    manager_token = manager.ok("swarm", "join-token", "-q", "manager").stdout.strip()
    assert TOKEN.match(manager_token) and manager_token != token
    assert manager_token.split("-")[2] == token.split("-")[2], "both carry the root CA digest"

    worker = start_worker(node_factory, manager, "w1", 2)
    wait_status(manager, "w1", "Ready")
    row = node_rows(manager)["w1"]
    assert row["ManagerStatus"] == "" and row["Availability"] == "Active" and row["EngineVersion"]

    creds = load_credentials(worker.state_dir / "certificates")
    cert = x509.load_pem_x509_certificate(creds.cert_pem)
    info = manager.info()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == row["ID"]
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "swarm-worker"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == info["ClusterID"]
    assert stat.S_IMODE((worker.state_dir / "certificates" / "swarm-node.key").stat().st_mode) == 0o600
    for path in worker.state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"SWMTKN" not in data and token.encode() not in data, f"{path} holds the join token"

    # Rotation: the old token admits nobody new; nodes already in the swarm are unaffected.
    rotated = manager.ok("swarm", "join-token", "--rotate", "worker").stdout
    assert "Successfully rotated worker join token." in rotated
    new_token = manager.ok("swarm", "join-token", "-q", "worker").stdout.strip()
    assert new_token != token and new_token.split("-")[2] == token.split("-")[2]
    late = node_factory(name="w2", host="127.0.0.3").start()
    refused = late.cli("swarm", "join", "--token", token, manager.addr)
    assert refused.returncode != 0 and "invalid join token" in one_line_error(refused.stderr)
    assert late.info()["Swarm"] == "inactive"
    late.ok("swarm", "join", "--token", new_token, manager.addr)
    wait_status(manager, "w2", "Ready")
    assert node_rows(manager)["w1"]["Status"] == "Ready"


def test_join_errors_are_one_line(node_factory: Factory) -> None:
    manager = start_manager(node_factory)
    other = node_factory(name="other", host="127.0.0.1").start()
    other.init()
    foreign_token = other.ok("swarm", "join-token", "-q", "worker").stdout.strip()
    joiner = node_factory(name="joiner", host="127.0.0.4").start()

    def refused(*args: str) -> str:
        result = joiner.cli("swarm", "join", *args)
        assert result.returncode != 0
        return one_line_error(result.stderr)

    assert "invalid join token" in refused("--token", "SWMTKN-1-nope", manager.addr)
    assert "invalid join token" in refused("--token", "hello", manager.addr)
    # The root CA shown at that address is not the one the token names: a man in the middle
    # (here: another swarm) must not be able to enrol the node.
    assert "does not match the join token's digest" in refused("--token", foreign_token, manager.addr)
    token = manager.ok("swarm", "join-token", "-q", "worker").stdout.strip()
    closed = f"127.0.0.1:{manager.port + 1 if manager.port < 65535 else manager.port - 1}"
    assert f"cannot reach {closed}: connection refused" in refused("--token", token, closed)
    assert joiner.info()["Swarm"] == "inactive"
    assert not (joiner.state_dir / "certificates").exists()
    assert set(node_rows(manager)) == {"mgr"}, "no refused join may leave a node behind"


# --------------------------------------------------------------------------- authorisation


async def test_rpc_authorisation_by_peer_certificate(node_factory: Factory, tmp_path: Path) -> None:
    from shoal import rpc
    from shoal.loader import PluginLoader
    from shoal.proto import rpc_pb2 as rpb
    from shoal.roles.transport import RPCError, StatusCode, TLSMaterial
    from shoal.testing.transport import ClusterPKI

    manager = start_manager(node_factory)
    worker = start_worker(node_factory, manager, "w1", 2)
    wait_status(manager, "w1", "Ready")
    manager_creds = load_credentials(manager.state_dir / "certificates")
    worker_creds = load_credentials(worker.state_dir / "certificates")
    loader = PluginLoader()
    transport = loader.provider("transport", loader.make_context("transport", tmp_path / "t"))
    control = rpb.ControlRequest(method="node.ls", json_body=b"{}").SerializeToString()
    try:
        as_manager = TLSMaterial(manager_creds.root_pem, manager_creds.cert_pem, manager_creds.key_pem)
        assert await transport.call(manager.addr, rpc.CONTROL, control, tls=as_manager, timeout=5)
        as_worker = TLSMaterial(worker_creds.root_pem, worker_creds.cert_pem, worker_creds.key_pem)
        with pytest.raises(RPCError) as denied:
            await transport.call(manager.addr, rpc.CONTROL, control, tls=as_worker, timeout=5)
        assert denied.value.code == StatusCode.PERMISSION_DENIED
        anonymous = TLSMaterial(root_pem=manager_creds.root_pem)
        with pytest.raises(RPCError) as unauthenticated:
            await transport.call(manager.addr, rpc.CONTROL, control, tls=anonymous, timeout=5)
        assert unauthenticated.value.code == StatusCode.PERMISSION_DENIED
        # Unauthenticated callers still reach the join calls.
        root = await transport.call(manager.addr, rpc.GET_ROOT_CA, b"", tls=anonymous, timeout=5)
        assert rpb.GetRootCAResponse.FromString(root).certificate == manager_creds.root_pem

        # A certificate from another CA, or an expired one from this CA, fails at the handshake.
        stranger = ClusterPKI(cluster_id=str(manager.info()["ClusterID"]))
        foreign = stranger.node("intruder", "swarm-manager")
        with pytest.raises(RPCError) as handshake:
            await transport.call(
                manager.addr,
                rpc.CONTROL,
                control,
                tls=TLSMaterial(manager_creds.root_pem, foreign.cert_pem, foreign.key_pem),
                timeout=5,
            )
        assert handshake.value.code == StatusCode.UNAVAILABLE
    finally:
        await transport.close()


# --------------------------------------------------------------------------- renewal


def test_certificate_renewal_and_expiry_floor(node_factory: Factory) -> None:
    floor = {"SHOAL_UNSAFE_TEST_MIN_CERT_EXPIRY": "6"}
    manager = start_manager(node_factory, env=floor)
    short = manager.ok("swarm", "update", "--cert-expiry", "12s")
    assert short.returncode == 0
    worker = start_worker(node_factory, manager, "w1", 2)
    cert_file = worker.state_dir / "certificates" / "swarm-node.crt"
    first = cert_file.read_bytes()
    lifetime = x509.load_pem_x509_certificate(first)
    assert (lifetime.not_valid_after_utc - lifetime.not_valid_before_utc).total_seconds() < 3600 + 60
    seen = {first}

    def renewed_twice() -> bool:
        seen.add(cert_file.read_bytes())
        return len(seen) >= 3

    wait_until(renewed_twice, 40, interval=0.5, what="two certificate renewals over mutual TLS")
    wait_status(manager, "w1", "Ready")
    assert "renewed the node certificate" in worker.log_text()

    # A node whose certificate expired while it was off is told how to recover.
    worker.stop()
    expiry = x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc
    wait_until(lambda: dt.datetime.now(dt.UTC) > expiry, 30, interval=0.5, what="the certificate to expire")
    assert (
        asyncio.run(call_with(load_credentials(worker.state_dir / "certificates"), manager)) == "UNAVAILABLE"
    )
    worker.start(wait=False)
    assert worker.proc is not None and worker.proc.wait(30) == 1
    assert "expired" in worker.log_text() and "shoal swarm join" in worker.log_text()


async def call_with(creds: object, manager: ShoalNode) -> str:
    """Call the dispatcher with these credentials; the status code it fails with, or OK."""
    from shoal import rpc
    from shoal.loader import PluginLoader
    from shoal.proto import rpc_pb2 as rpb
    from shoal.roles.transport import RPCError, TLSMaterial

    loader = PluginLoader()
    transport = loader.provider(
        "transport", loader.make_context("transport", manager.base / "expired-client")
    )
    tls = TLSMaterial(creds.root_pem, creds.cert_pem, creds.key_pem)  # type: ignore[attr-defined]
    try:
        await transport.call(
            manager.addr, rpc.HEARTBEAT, rpb.HeartbeatRequest().SerializeToString(), tls=tls, timeout=5
        )
    except RPCError as exc:
        return exc.code.value
    finally:
        await transport.close()
    return "OK"


def test_cert_expiry_minimum_is_one_hour(node_factory: Factory) -> None:
    manager = start_manager(node_factory)
    refused = manager.cli("swarm", "update", "--cert-expiry", "30m")
    assert refused.returncode == 2
    assert "the minimum is 1h" in one_line_error(refused.stderr)
    manager.ok("swarm", "update", "--cert-expiry", "1h")


# --------------------------------------------------------------------------- heartbeats and failures


def test_down_node_tasks_rescheduled_and_not_duplicated(node_factory: Factory, docker_engine: Engine) -> None:
    manager = start_manager(node_factory)
    w1 = start_worker(node_factory, manager, "w1", 2)
    w2 = start_worker(node_factory, manager, "w2", 3)
    wait_status(manager, "w2", "Ready")
    manager.ok(
        "service",
        "create",
        "--name",
        "hb",
        "--replicas",
        "6",
        "--restart-delay",
        "0s",
        "--stop-grace-period",
        "1s",
        "--detach",
        TEST_IMAGE,
    )
    wait_until(
        lambda: running_by_node(manager, "hb") == Counter({"mgr": 2, "w1": 2, "w2": 2}),
        60,
        what="2 tasks on each node",
    )
    w2_id = str(node_rows(manager)["w2"]["ID"])
    assert w2.proc is not None
    w2.proc.send_signal(signal.SIGSTOP)  # the node stops heartbeating: as if its link were cut
    try:
        wait_status(manager, "w2", "Down", 15)
        wait_until(
            lambda: (
                sum(running_by_node(manager, "hb").values()) == 6
                and "w2" not in running_by_node(manager, "hb")
            ),
            60,
            what="6 running again without w2",
        )
    finally:
        w2.proc.send_signal(signal.SIGCONT)
    wait_status(manager, "w2", "Ready", 30)
    # Its stale tasks are shut down, not run next to their replacements.
    wait_until(
        lambda: not docker_engine.service_containers(w2_id, "hb"), 60, what="w2's stale containers stopped"
    )
    assert sum(running_by_node(manager, "hb").values()) == 6
    assert w1.proc is not None and w1.proc.poll() is None


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_agent_keeps_tasks_when_manager_is_lost(node_factory: Factory, docker_engine: Engine) -> None:
    manager = start_manager(node_factory, heartbeat="2s")
    worker = start_worker(node_factory, manager, "w1", 2)
    wait_status(manager, "w1", "Ready")
    manager.ok("node", "update", "--availability", "drain", "mgr")
    manager.ok("service", "create", "--name", "keep", "--replicas", "2", "--detach", TEST_IMAGE)
    wait_until(lambda: running_by_node(manager, "keep") == Counter({"w1": 2}), 60, what="2 tasks on w1")
    worker_id = str(node_rows(manager)["w1"]["ID"])
    before = {c.id for c in docker_engine.service_containers(worker_id, "keep")}
    manager.kill()
    # The worker keeps running its tasks while it retries with backoff.
    wait_until(lambda: "session with manager" in worker.log_text(), 20, what="the worker to notice")
    assert {c.id for c in docker_engine.service_containers(worker_id, "keep")} == before
    manager.start()
    wait_status(manager, "w1", "Ready", 40)
    wait_until(lambda: running_by_node(manager, "keep") == Counter({"w1": 2}), 30, what="2 tasks still on w1")
    assert {c.id for c in docker_engine.service_containers(worker_id, "keep")} == before


# --------------------------------------------------------------------------- node management


def test_node_management(node_factory: Factory) -> None:
    manager = start_manager(node_factory)
    w1 = start_worker(node_factory, manager, "w1", 2)
    w2 = start_worker(node_factory, manager, "w2", 3)
    wait_status(manager, "w2", "Ready")
    rows = node_rows(manager)
    assert rows["mgr"]["Self"] is True and rows["mgr"]["ManagerStatus"] == "Leader"
    table = manager.ok("node", "ls").stdout.splitlines()
    assert table[0].split() == [
        "ID",
        "HOSTNAME",
        "STATUS",
        "AVAILABILITY",
        "MANAGER",
        "STATUS",
        "ENGINE",
        "VERSION",
    ]
    assert any(line.split()[1] == "*" for line in table[1:])

    manager.ok("node", "update", "--availability", "drain", "mgr")
    manager.ok(
        "service",
        "create",
        "--name",
        "nm",
        "--replicas",
        "4",
        "--stop-grace-period",
        "1s",
        "--detach",
        TEST_IMAGE,
    )
    wait_until(lambda: running_by_node(manager, "nm") == Counter({"w1": 2, "w2": 2}), 60, what="2 + 2")
    ps = manager.ok("node", "ps", "w1", "--format", "json").json_lines()
    assert len([t for t in ps if t["DesiredState"] == "Running"]) == 2

    # Pause keeps tasks and places nothing new; drain moves them away at once; active re-admits.
    manager.ok("node", "update", "--availability", "pause", "w1")
    manager.ok("service", "scale", "--detach", "nm=6")
    wait_until(
        lambda: running_by_node(manager, "nm") == Counter({"w1": 2, "w2": 4}), 60, what="new tasks on w2 only"
    )
    manager.ok("node", "update", "--availability", "drain", "w1")
    wait_until(lambda: running_by_node(manager, "nm") == Counter({"w2": 6}), 60, what="w1 drained")
    manager.ok("node", "update", "--availability", "active", "w1")
    manager.ok("service", "scale", "--detach", "nm=8")
    wait_until(lambda: running_by_node(manager, "nm")["w1"] == 2, 60, what="w1 eligible again")

    manager.ok("node", "update", "--label-add", "zone=a", "--label-add", "disk=ssd", "w1")
    manager.ok("node", "update", "--label-rm", "disk", "w1")
    labels = json.loads(manager.ok("node", "inspect", "w1").stdout)[0]["Spec"]["Labels"]
    assert labels == {"zone": "a"}
    missing = manager.cli("node", "update", "--label-rm", "nope", "w1")
    assert missing.returncode != 0 and "nope" in one_line_error(missing.stderr)

    up = manager.cli("node", "rm", "w2")
    assert up.returncode == 1 and "is not down" in one_line_error(up.stderr)
    manager_rm = manager.cli("node", "rm", "mgr")
    assert manager_rm.returncode == 1 and "must be demoted" in one_line_error(manager_rm.stderr)
    leave = manager.cli("swarm", "leave")
    assert leave.returncode == 1 and "--force" in one_line_error(leave.stderr)

    w2.ok("swarm", "leave")
    assert w2.info()["Swarm"] == "inactive"
    wait_status(manager, "w2", "Down", 15)
    manager.ok("node", "rm", "w2")
    assert "w2" not in node_rows(manager)
    manager.ok("node", "rm", "--force", "w1")
    assert "w1" not in node_rows(manager)
    wait_until(
        lambda: "removed from the swarm" in w1.log_text() or "not a member" in w1.log_text(),
        20,
        what="the removed node to be refused",
    )


def test_constraints_on_live_nodes(node_factory: Factory) -> None:
    manager = start_manager(node_factory)
    start_worker(node_factory, manager, "w1", 2)
    start_worker(node_factory, manager, "w2", 3)
    wait_status(manager, "w2", "Ready")
    manager.ok("node", "update", "--label-add", "zone=a", "w1")
    manager.ok(
        "service",
        "create",
        "--name",
        "workers",
        "--replicas",
        "4",
        "--constraint",
        "node.role==worker",
        "--detach",
        TEST_IMAGE,
    )
    manager.ok(
        "service",
        "create",
        "--name",
        "zoned",
        "--replicas",
        "2",
        "--constraint",
        "node.labels.zone==a",
        "--detach",
        TEST_IMAGE,
    )
    manager.ok(
        "service",
        "create",
        "--name",
        "notw1",
        "--replicas",
        "3",
        "--constraint",
        "node.hostname!=w1",
        "--detach",
        TEST_IMAGE,
    )
    manager.ok(
        "service",
        "create",
        "--name",
        "nowhere",
        "--constraint",
        "node.labels.zone==mars",
        "--detach",
        TEST_IMAGE,
    )
    wait_until(lambda: running_by_node(manager, "workers") == Counter({"w1": 2, "w2": 2}), 60, what="workers")
    wait_until(lambda: running_by_node(manager, "zoned") == Counter({"w1": 2}), 60, what="zone a")
    wait_until(
        lambda: (
            sum(running_by_node(manager, "notw1").values()) == 3
            and "w1" not in running_by_node(manager, "notw1")
        ),
        60,
        what="not on w1",
    )
    pending = wait_until(
        lambda: [t for t in manager.tasks("nowhere") if t["Error"]], 30, what="an explanation"
    )
    assert pending[0]["CurrentState"].startswith("Pending")
    assert "scheduling constraints not satisfied on 3 nodes" in pending[0]["Error"]
    # ... and it starts as soon as a node fits.
    manager.ok("node", "update", "--label-add", "zone=mars", "w2")
    wait_until(
        lambda: running_by_node(manager, "nowhere") == Counter({"w2": 1}), 60, what="placed once it fits"
    )


def test_spread_drain_and_worker_constraint(node_factory: Factory) -> None:
    manager = start_manager(node_factory)
    start_worker(node_factory, manager, "w1", 2)
    start_worker(node_factory, manager, "w2", 3)
    wait_status(manager, "w2", "Ready")
    manager.ok(
        "service",
        "create",
        "--name",
        "six",
        "--replicas",
        "6",
        "--stop-grace-period",
        "1s",
        "--detach",
        TEST_IMAGE,
    )
    wait_until(
        lambda: running_by_node(manager, "six") == Counter({"mgr": 2, "w1": 2, "w2": 2}), 60, what="2/2/2"
    )
    manager.ok("node", "update", "--availability", "drain", "mgr")
    wait_until(lambda: running_by_node(manager, "six") == Counter({"w1": 3, "w2": 3}), 60, what="3/3")
    manager.ok("node", "update", "--availability", "active", "mgr")
    manager.ok(
        "service",
        "create",
        "--name",
        "onlyworkers",
        "--replicas",
        "6",
        "--constraint",
        "node.role==worker",
        "--detach",
        TEST_IMAGE,
    )
    wait_until(
        lambda: running_by_node(manager, "onlyworkers") == Counter({"w1": 3, "w2": 3}),
        60,
        what="only on workers",
    )


def test_killed_worker_rejoins_with_its_certificate(node_factory: Factory, docker_engine: Engine) -> None:
    manager = start_manager(node_factory)
    start_worker(node_factory, manager, "w1", 2)
    w2 = start_worker(node_factory, manager, "w2", 3)
    wait_status(manager, "w2", "Ready")
    manager.ok(
        "service",
        "create",
        "--name",
        "k9",
        "--replicas",
        "6",
        "--restart-delay",
        "0s",
        "--stop-grace-period",
        "1s",
        "--detach",
        TEST_IMAGE,
    )
    wait_until(lambda: running_by_node(manager, "k9")["w2"] == 2, 60, what="2 tasks on w2")
    w2_id = str(node_rows(manager)["w2"]["ID"])
    stale = {c.id for c in docker_engine.service_containers(w2_id, "k9")}
    w2.kill()
    wait_status(manager, "w2", "Down", 15)  # 3 heartbeats of 1 s, plus the check interval
    wait_until(
        lambda: (
            sum(running_by_node(manager, "k9").values()) == 6 and "w2" not in running_by_node(manager, "k9")
        ),
        60,
        what="its tasks running elsewhere",
    )
    w2.start()  # no token: it rejoins with the certificate in its state dir
    wait_status(manager, "w2", "Ready", 30)
    assert "SWMTKN" not in " ".join(w2.daemon_args())
    # Its stale tasks are shut down (their containers stop and stay as history, as in Swarm),
    # and the service runs exactly 6 replicas: nothing duplicated.
    wait_until(lambda: not docker_engine.service_containers(w2_id, "k9"), 60, what="stale containers stopped")
    stopped = {c.id for c in docker_engine.service_containers(w2_id, "k9", running_only=False)}
    assert stopped <= stale
    assert sum(running_by_node(manager, "k9").values()) == 6
    total_running = sum(
        len(docker_engine.service_containers(str(row["ID"]), "k9")) for row in node_rows(manager).values()
    )
    assert total_running == 6
