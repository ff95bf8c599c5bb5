"""External CA: a swarm whose node certificates all come from a real ``cfssl serve``.

cfssl runs with ``-mutual-tls-ca`` set to its own CA (the cluster root), so only holders of a
certificate from it get in: the first manager with a bootstrap certificate issued out of band,
then with its own manager certificate. Joins and renewals go through cfssl; when cfssl is down
joins fail naming it while running tasks carry on and renewals retry; a cfssl refusal shows in
``node inspect``.

cfssl (1.2) rounds NotBefore to the minute, so its profile here is 120s long with a 30s
backdate: every node renews within about 100s, on its own, through cfssl.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from engines import Engine, engine_for
from harness import TEST_IMAGE, ShoalNode, wait_until
from shoal import tokens
from shoal_ca_cfssl.testing import CfsslServer, signing_config

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]
#: Longest wait for some node's next renewal: 80% of the 120s profile plus slack.
RENEWAL_WAIT = 150.0


@pytest.fixture
def cfssl(tmp_path: Path) -> Iterator[CfsslServer]:
    server = CfsslServer(tmp_path / "cfssl", config=signing_config(default_expiry="120s", backdate="30s"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def docker_engine() -> Engine:
    engine = engine_for("docker")
    engine.require_image(TEST_IMAGE)
    return engine


def node_cert(node: ShoalNode) -> bytes:
    return (node.state_dir / "certificates" / "swarm-node.crt").read_bytes()


def subject(cert_pem: bytes) -> dict[str, str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return {
        name: str(cert.subject.get_attributes_for_oid(oid)[0].value)
        for name, oid in (
            ("CN", NameOID.COMMON_NAME),
            ("OU", NameOID.ORGANIZATIONAL_UNIT_NAME),
            ("O", NameOID.ORGANIZATION_NAME),
        )
    }


def signed_by_cfssl(cfssl: CfsslServer, cert_pem: bytes) -> bool:
    ca = x509.load_pem_x509_certificate(cfssl.ca_cert.read_bytes())
    x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(ca)  # raises if not
    return True


def sign_requests(cfssl: CfsslServer) -> int:
    return cfssl.log_text().count("signature request received")


def signed_for(cfssl: CfsslServer, issued: int, nodes: list[ShoalNode]) -> None:
    """cfssl signed ``issued`` certificates plus one per renewal these nodes made: cfssl rounds
    NotBefore to the minute, so a certificate can be due for renewal seconds after it was
    issued (about one run in thirty before the workers had joined). Waited on, as a renewal's
    request reaches cfssl before the node logs it."""

    def renewals() -> int:
        return sum(node.log_text().count("renewed the node certificate") for node in nodes)

    wait_until(
        lambda: sign_requests(cfssl) == issued + renewals(),
        30,
        what=f"cfssl to have signed {issued} certificates and one per renewal",
    )


def inspect(manager: ShoalNode, node: str) -> dict[str, object]:
    """The node's certificate issuance (shoal's ``Certificate`` beside docker's node shape)."""
    shown = json.loads(manager.ok("node", "inspect", node).stdout)[0].get("Certificate", {})
    return {"certificate": {"state": shown.get("State", "").upper(), "err": shown.get("Error", "")}}


def node_rows(manager: ShoalNode) -> dict[str, dict[str, object]]:
    return {str(row["Hostname"]): row for row in manager.ok("node", "ls", "--format", "json").json_lines()}


def running_by_node(manager: ShoalNode, service: str) -> Counter[str]:
    return Counter(t["Node"] for t in manager.running(service))


def wait_renewal(nodes: list[ShoalNode], after: dict[str, bytes], what: str) -> ShoalNode:
    """Wait until some node holds a certificate other than ``after[name]``; that node."""

    def renewed() -> ShoalNode | None:
        return next((n for n in nodes if node_cert(n) != after[n.name]), None)

    return wait_until(renewed, RENEWAL_WAIT, interval=0.5, what=what)


@pytest.mark.timeout(900)
def test_swarm_with_cfssl_external_ca(
    node_factory: Factory, cfssl: CfsslServer, docker_engine: Engine, tmp_path: Path
) -> None:
    external = f"protocol=cfssl,url={cfssl.url},cacert={cfssl.ca_cert}"
    boot_cert, boot_key = cfssl.issue("bootstrap", "shoal-bootstrap")  # out of band

    # ---------------------------------------------------------------- init through cfssl
    manager = node_factory(name="mgr", host="127.0.0.1").start()
    manager.init(
        "--external-ca", external, "--bootstrap-cert", str(boot_cert), "--bootstrap-key", str(boot_key)
    )
    manager.ok("swarm", "update", "--dispatcher-heartbeat", "1s")
    info = manager.info()
    cluster_id = str(info["ClusterID"])
    assert info["Plugins"]["ca"] == "cfssl"  # --external-ca selects the cfssl CA plugin
    assert subject(node_cert(manager)) == {"CN": manager.node_id(), "OU": "swarm-manager", "O": cluster_id}
    assert signed_by_cfssl(cfssl, node_cert(manager))
    # The cluster root is cfssl's CA, and the join tokens carry its digest.
    root = (manager.state_dir / "certificates" / "swarm-root-ca.crt").read_bytes()
    assert root == cfssl.ca_cert.read_bytes()
    token = manager.ok("swarm", "join-token", "-q", "worker").stdout.strip()
    assert tokens.parse(token).digest == tokens.root_digest(root)
    signed_for(cfssl, 1, [manager])

    # ---------------------------------------------------------------- joins through cfssl
    workers = []
    for index, name in ((2, "w1"), (3, "w2")):
        worker = node_factory(name=name, host=f"127.0.0.{index}").start()
        worker.join(manager)
        workers.append(worker)
    for worker in workers:
        cert = node_cert(worker)
        assert subject(cert) == {"CN": worker.node_id(), "OU": "swarm-worker", "O": cluster_id}
        assert signed_by_cfssl(cfssl, cert)
    signed_for(cfssl, 3, [manager, *workers])
    # The certificates cfssl issued work for the cluster's mutual TLS: the workers are Ready.
    wait_until(
        lambda: [node_rows(manager).get(w.name, {}).get("Status") for w in workers] == ["Ready", "Ready"],
        30,
        what="both workers Ready",
    )

    # ---------------------------------------------------------------- renewal through cfssl
    nodes = [manager, *workers]
    before = {n.name: node_cert(n) for n in nodes}
    requests = sign_requests(cfssl)
    renewed = wait_renewal(nodes, before, "a certificate renewal through cfssl")
    assert signed_by_cfssl(cfssl, node_cert(renewed))
    assert subject(node_cert(renewed))["CN"] == renewed.node_id()
    assert sign_requests(cfssl) > requests

    # ---------------------------------------------------------------- cfssl down
    manager.ok(
        "service", "create", "--name", "keep", "--replicas", "2", "--constraint", "node.role==worker",
        "--detach", TEST_IMAGE,
    )  # fmt: skip
    wait_until(
        lambda: running_by_node(manager, "keep") == Counter({"w1": 1, "w2": 1}),
        90,
        what="a task on each worker",
    )
    containers = {
        w.name: {c.id for c in docker_engine.service_containers(w.node_id(), "keep")} for w in workers
    }
    cfssl.stop()
    late = node_factory(name="w3", host="127.0.0.4").start()
    token = manager.ok("swarm", "join-token", "-q", "worker").stdout.strip()
    refused = late.cli("swarm", "join", "--token", token, manager.addr)
    assert refused.returncode != 0
    error = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"external CA unreachable: {cfssl.url}" in error[0], error[0]
    print(f"\njoin while cfssl is down: {error[0]}")  # shown with -s: the text the docs quote

    # Renewals fail and are retried; nothing stops meanwhile.
    down_since = {n.name: node_cert(n) for n in nodes}
    failing = wait_until(
        lambda: next(
            (
                n
                for n in nodes
                if "certificate renewal failed" in n.log_text() and "external CA" in n.log_text()
            ),
            None,
        ),
        RENEWAL_WAIT,
        interval=0.5,
        what="a renewal to fail while cfssl is down",
    )
    assert node_cert(failing) == down_since[failing.name]
    # The failed renewal shows on the node, with the external CA named.
    wait_until(
        lambda: inspect(manager, failing.node_id()).get("certificate", {}).get("state") == "FAILED",  # type: ignore[union-attr]
        30,
        what="the failed renewal in node inspect",
    )
    err = str(inspect(manager, failing.node_id())["certificate"]["err"])  # type: ignore[index]
    assert f"external CA unreachable: {cfssl.url}" in err, err
    for worker in workers:
        assert {c.id for c in docker_engine.service_containers(worker.node_id(), "keep")} == containers[
            worker.name
        ]
    assert running_by_node(manager, "keep") == Counter({"w1": 1, "w2": 1})

    # ---------------------------------------------------------------- cfssl back
    cfssl.start()
    back = wait_until(
        lambda: node_cert(failing) != down_since[failing.name], 90, interval=0.5, what="the retried renewal"
    )
    assert back and signed_by_cfssl(cfssl, node_cert(failing))
    assert inspect(manager, failing.node_id()).get("certificate", {}).get("state") == "ISSUED"  # type: ignore[union-attr]
    # A restarted manager configures the plugin from the cluster object and signs again,
    # authenticating with its own (renewed) certificate.
    manager.stop()
    manager.start()
    wait_until(lambda: manager.info().get("IsLeader"), 30, what="the manager to lead again")
    late.join(manager)  # joins work again
    assert signed_by_cfssl(cfssl, node_cert(late))

    # ---------------------------------------------------------------- cfssl refuses
    manager.ok("swarm", "update", "--external-ca", f"{external},profile=refuse")
    nodes.append(late)

    def failed_node() -> dict[str, object] | None:
        for node in nodes:
            certificate = inspect(manager, node.node_id()).get("certificate", {})
            assert isinstance(certificate, dict)
            # A node whose renewal failed while cfssl was down may still show that failure
            # until its retry (only ``failing``'s retry is waited for above): not this one.
            if certificate.get("state") == "FAILED" and "unreachable" not in str(certificate.get("err", "")):
                return certificate
        return None

    certificate = wait_until(failed_node, RENEWAL_WAIT, interval=1, what="a node certificate FAILED by cfssl")
    err = str(certificate.get("err", ""))
    assert f"external CA {cfssl.url} refused: Request does not match policy whitelist" in err, err
    # The service keeps its tasks running while cfssl refuses (the manager restart above may
    # have moved one: only the count is stable).
    wait_until(lambda: sum(running_by_node(manager, "keep").values()) == 2, 60, what="2 tasks running")
