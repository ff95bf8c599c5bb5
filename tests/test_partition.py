"""A worker cut off by a real network partition: two network namespaces joined by a veth pair.

The manager runs in one namespace, the worker in the other; the test takes the worker's link
down. The worker keeps its tasks running; the manager marks it Down and runs replacements; after
the heal the worker reconnects, its stale tasks are shut down, and exactly N replicas run.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from engines import Engine, engine_for
from harness import TEST_IMAGE, ShoalNode, wait_until

pytestmark = [pytest.mark.cluster]

SUBNET = "10.213.91"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Namespaces ``<a>`` (10.213.91.1) and ``<b>`` (10.213.91.2) linked by a veth pair."""
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"shoal-a{tag}", f"shoal-b{tag}"
    veth_a, veth_b = f"sha{tag}", f"shb{tag}"
    ip("netns", "add", ns_a)
    ip("netns", "add", ns_b)
    try:
        ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        ip("link", "set", veth_a, "netns", ns_a)
        ip("link", "set", veth_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, veth_a, f"{SUBNET}.1/24"), (ns_b, veth_b, f"{SUBNET}.2/24")):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        yield ns_a, ns_b
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def in_ns(ns: str) -> list[str]:
    # nsenter changes only the network namespace (ip netns exec would also remount /sys).
    return ["nsenter", f"--net=/var/run/netns/{ns}"]


def test_partitioned_worker_keeps_tasks_and_cluster_converges(
    node_factory: Callable[..., ShoalNode], two_hosts: tuple[str, str]
) -> None:
    ns_a, ns_b = two_hosts
    engine: Engine = engine_for("docker")
    engine.require_image(TEST_IMAGE)
    manager = node_factory(name="mgr", host=f"{SUBNET}.1", wrapper=in_ns(ns_a)).start()
    manager.init()
    manager.ok("swarm", "update", "--dispatcher-heartbeat", "1s")
    worker = node_factory(name="w1", host=f"{SUBNET}.2", wrapper=in_ns(ns_b)).start()
    worker.join(manager)
    wait_until(
        lambda: (
            {
                r["Hostname"]: r["Status"] for r in manager.ok("node", "ls", "--format", "json").json_lines()
            }.get("w1")
            == "Ready"
        ),
        30,
        what="w1 Ready",
    )
    manager.ok(
        "service",
        "create",
        "--name",
        "part",
        "--replicas",
        "4",
        "--restart-delay",
        "0s",
        "--stop-grace-period",
        "1s",
        "--detach",
        TEST_IMAGE,
    )

    def by_node() -> Counter[str]:
        return Counter(t["Node"] for t in manager.running("part"))

    wait_until(lambda: by_node() == Counter({"mgr": 2, "w1": 2}), 60, what="2 + 2")
    worker_id = worker.node_id()
    on_worker = {c.id for c in engine.service_containers(worker_id, "part")}
    assert len(on_worker) == 2

    ip("-n", ns_b, "link", "set", f"shb{os.getpid() % 100000}", "down")  # the partition
    try:
        wait_until(lambda: by_node() == Counter({"mgr": 4}), 60, what="replacements on the manager")
        # Cut off, the worker keeps its tasks running.
        assert {c.id for c in engine.service_containers(worker_id, "part")} == on_worker
    finally:
        ip("-n", ns_b, "link", "set", f"shb{os.getpid() % 100000}", "up")  # the heal

    wait_until(
        lambda: not engine.service_containers(worker_id, "part"),
        90,
        what="the worker's stale tasks shut down after the heal",
    )
    wait_until(lambda: sum(by_node().values()) == 4, 30, what="exactly 4 replicas")
    assert sum(by_node().values()) == 4
    running_everywhere = len(engine.service_containers(manager.node_id(), "part")) + len(
        engine.service_containers(worker_id, "part")
    )
    assert running_everywhere == 4
