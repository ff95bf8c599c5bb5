"""``shoal hollow``: many worker nodes, each a real agent with its own certificate and mutual-TLS
session, against a real manager process (fake runtime: containers are state).

One test of the capability at a small scale (50 nodes, 200 tasks); the scale figures are
bench/bench_hollow.py's (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import SHOAL, ShoalNode, terminate, wait_until
from shoal import identity
from shoal.daemon.state import CERTS_DIR
from shoal.hollow.status import read_fleet

HOLLOW = 50
REPLICAS = 200


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ShoalNode]:
    node = ShoalNode(base=tmp_path, name="mgr", runtime="fake").start()
    try:
        node.init("--plugin", "network=fake")
        yield node
    finally:
        node.kill()


def hollow_fleet(manager: ShoalNode, tmp_path: Path, count: int, *extra: str) -> subprocess.Popen[bytes]:
    token = manager.ok("swarm", "join-token", "-q", "worker").stdout.strip()
    log = open(tmp_path / "hollow.log", "ab")
    return subprocess.Popen(
        [
            *SHOAL,
            "hollow",
            "--managers",
            manager.addr,
            "--token",
            token,
            "--count",
            str(count),
            "--state-dir",
            str(tmp_path / "hollow"),
            *extra,
        ],
        stdout=log,
        stderr=log,
    )


def ready_nodes(manager: ShoalNode) -> list[dict[str, str]]:
    return [r for r in manager.ok("node", "ls", "--format", "json").json_lines() if r["Status"] == "Ready"]


def test_fifty_hollow_nodes_join_and_run_200_replicas(manager: ShoalNode, tmp_path: Path) -> None:
    fleet = hollow_fleet(manager, tmp_path, HOLLOW, "--processes", "2")
    try:
        wait_until(
            lambda: len(ready_nodes(manager)) == HOLLOW + 1, 180, 0.5, what=f"{HOLLOW} hollow nodes Ready"
        )
        rows = ready_nodes(manager)
        hollow = [r for r in rows if r["Hostname"].startswith("hollow-")]
        assert sorted(r["Hostname"] for r in hollow) == [f"hollow-{i:05d}" for i in range(HOLLOW)]
        assert len({r["ID"] for r in rows}) == HOLLOW + 1, "node IDs are not distinct"

        # Each node has its own certificate from the cluster CA: a worker's, for its own node ID.
        ids = {r["Hostname"]: r["ID"] for r in hollow}
        root = (manager.state_dir / CERTS_DIR / identity.ROOT_FILE).read_bytes()
        for name in ("hollow-00000", f"hollow-{HOLLOW - 1:05d}"):
            cert = (tmp_path / "hollow" / name / "certs" / identity.CERT_FILE).read_bytes()
            identity.verify_chain(cert, root)
            peer = identity.parse_identity(cert)
            assert (peer.node_id, peer.role) == (ids[name], "swarm-worker")

        # Distinct descriptions: resources and engine labels differ from node to node.
        described = json.loads(manager.ok("node", "inspect", "hollow-00000", "hollow-00001").stdout)
        cpus = {d["Description"]["Resources"]["NanoCPUs"] for d in described}
        zones = {d["Description"]["Engine"]["Labels"]["zone"] for d in described}
        assert len(cpus) == 2 and len(zones) == 2, described

        manager.ok("service", "create", "--name", "big", "--replicas", str(REPLICAS), "--detach", "app:1")
        wait_until(
            lambda: len(manager.running("big")) == REPLICAS, 180, 0.5, what=f"{REPLICAS}/{REPLICAS} running"
        )
        per_node = Counter(t["Node"] for t in manager.running("big"))
        assert len(per_node) == HOLLOW + 1 and max(per_node.values()) - min(per_node.values()) <= 1, per_node
        listed = manager.ok("service", "ls", "--format", "json").json_lines()
        assert [r["Replicas"] for r in listed if r["Name"] == "big"] == [f"{REPLICAS}/{REPLICAS}"]

        # The fleet's status files (what bench_hollow reads): every session open, every task seen.
        on_hollow = {node: count for node, count in per_node.items() if node.startswith("hollow-")}

        def fleet_agrees() -> bool:
            status = read_fleet(tmp_path / "hollow")
            return (status.nodes, status.connected, status.running_by_node) == (HOLLOW, HOLLOW, on_hollow)

        wait_until(fleet_agrees, 30, 0.5, what=f"status files: {HOLLOW} sessions, {on_hollow}")
    finally:
        terminate(fleet)
    assert fleet.returncode in (0, -15), (tmp_path / "hollow.log").read_text()


def test_bad_token_is_one_line_and_joins_nothing(manager: ShoalNode, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *SHOAL,
            "hollow",
            "--managers",
            manager.addr,
            "--token",
            "SWMTKN-1-nonsense",
            "--count",
            "3",
            "--state-dir",
            str(tmp_path / "hollow"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("Error: invalid --token") and len(result.stderr.strip().splitlines()) == 1
    assert len(ready_nodes(manager)) == 1


def test_each_hollow_node_has_its_own_transport(tmp_path: Path) -> None:
    """Nodes sharing a transport provider evict each other's channel to a manager at every
    call (a provider keeps one per manager, replaced when the TLS material differs): each
    call became a TLS handshake and 1,000 hollow nodes never all came up."""
    from shoal.hollow.fleet import Fleet, FleetConfig

    fleet = Fleet(FleetConfig(managers=["127.0.0.1:1"], token="unused", count=3, state_dir=tmp_path))
    assert len({id(node.transport) for node in fleet.nodes}) == 3
    assert [node.profile.hostname for node in fleet.nodes] == ["hollow-00000", "hollow-00001", "hollow-00002"]
