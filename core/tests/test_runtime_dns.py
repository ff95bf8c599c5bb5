"""Which nameservers a task's container gets (runtimekit.task.dns_servers, used by the docker
and podman runtimes): the swarm resolver for a task on networks, else the service's own."""

from __future__ import annotations

from shoal.proto import objects_pb2 as pb
from shoal.runtimekit.task import SWARM_RESOLVER, dns_servers
from shoal.testing.runtime import make_task


def test_a_task_with_networks_asks_the_swarm_resolver() -> None:
    task = make_task("img", node_id="n")
    task.networks.add(network=pb.Network(id="net"), addresses=["10.0.1.5/24"])
    task.spec.container.dns_config.nameservers.append("192.0.2.53")
    assert dns_servers(task) == [SWARM_RESOLVER] == ["127.0.0.11"]


def test_a_task_without_networks_keeps_its_own_or_the_engines_default() -> None:
    task = make_task("img", node_id="n")
    assert dns_servers(task) == []
    task.spec.container.dns_config.nameservers.extend(["192.0.2.53", "192.0.2.54"])
    assert dns_servers(task) == ["192.0.2.53", "192.0.2.54"]
