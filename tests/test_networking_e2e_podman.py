"""Networking end to end with Podman engines (issue 14): two hosts, each a network namespace
with its own podman service and shoal daemon (tests/multihost.py). The data path is the one
tests/test_networking_e2e.py checks on docker; this proves it does not depend on the engine:
the published port answers on both hosts from both replicas, and discovery works across hosts.
"""

from __future__ import annotations

from collections.abc import Iterator

import multihost
import pytest
from harness import wait_until
from multihost import Cluster
from test_networking_e2e import (
    ANSWER,
    IMAGE,
    in_task,
    lookup,
    network_subnet,
    overlay_address,
    running,
    wait_for_mesh,
)

pytestmark = [pytest.mark.cluster]


@pytest.fixture(scope="module")
def podman_swarm() -> Iterator[Cluster]:
    with multihost.cluster(2, "podman") as hosts:
        yield hosts
    assert not multihost.leftovers(hosts.tag), "the multi-host harness left namespaces or processes"


def test_podman_published_port_and_discovery_across_two_hosts(podman_swarm: Cluster) -> None:
    """The same data path with Podman engines: the published port answers on both hosts from
    both replicas, and a task resolves the other service's tasks by name across hosts."""
    m = podman_swarm.manager
    m.ok("network", "create", "-d", "overlay", "appnet")
    m.ok(
        "service", "create", "--detach", "--name", "search", "--replicas", "2", "-p", "8080:8080",
        "--network", "appnet", "--constraint", "node.hostname==h2", IMAGE,
    )  # fmt: skip
    m.ok(
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--network",
        "appnet",
        "--constraint",
        "node.hostname==h1",
        IMAGE,
    )
    search = running(podman_swarm, "search", 2)
    (web,) = running(podman_swarm, "web", 1)
    for host in podman_swarm.hosts:
        wait_for_mesh(podman_swarm, host, 8080, 2)
    appnet = network_subnet(podman_swarm, "appnet")
    addresses = sorted(overlay_address(podman_swarm, t, appnet) for t in search)
    assert wait_until(lambda: lookup(podman_swarm, web, "tasks.search") == addresses, 45, 0.3, "tasks.search")
    wait_until(
        lambda: (
            ANSWER
            in in_task(podman_swarm, web, "timeout", "3", "wget", "-q", "-O-", "http://search:8080/")[1]
        ),
        30,
        0.3,
        "web to reach search by name (VIP)",
    )
