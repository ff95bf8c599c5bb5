"""Swarm networks through real daemons: the ``network`` commands and their one-line refusals
(nothing changed), ``--network``/``--endpoint-mode``, the ingress network ``swarm init`` makes,
and the NetworkState a worker's agent really receives in its session, re-sent when it changes.

The runtime and network plugins are the in-memory fakes (``runtime=fake``, ``network=fake``):
what is proven here is the managers' side (allocation, the control API, the dispatcher's push),
not a data path; the data path has its own tests (plugins/network_overlay, test_networking_e2e).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import ShoalNode, wait_until

pytestmark = [pytest.mark.cluster]

FAKE = ["--plugin", "runtime=fake"]


def _swarm(node_factory: Any, *init_args: str) -> ShoalNode:
    node: ShoalNode = node_factory(runtime="fake")
    node.start()
    node.init("--plugin", "network=fake", *init_args)
    return node


def _state(node: ShoalNode) -> tuple[str, str]:
    """What a refused command must leave as it was: networks and services."""
    return node.ok("network", "ls", "--format", "json").stdout, node.ok(
        "service", "ls", "--format", "json"
    ).stdout


def _refused(node: ShoalNode, says: str, *args: str) -> None:
    before = _state(node)
    result = node.cli(*args)
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert _state(node) == before


def test_network_commands_refusals_and_service_endpoints(node_factory: Any) -> None:
    node = _swarm(node_factory)
    (ingress,) = json.loads(node.ok("network", "inspect", "ingress").stdout)
    assert (ingress["Scope"], ingress["Driver"], ingress["Ingress"]) == ("swarm", "overlay", True)
    assert ingress["IPAM"]["Config"] == [{"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.1"}]

    front_id = node.ok("network", "create", "-d", "overlay", "--label", "tier=web", "front").stdout.strip()
    node.ok("network", "create", "-d", "overlay", "--subnet", "10.99.0.0/24", "--attachable", "back")
    (back,) = json.loads(node.ok("network", "inspect", "back").stdout)
    assert (
        back["IPAM"]["Config"] == [{"Subnet": "10.99.0.0/24", "Gateway": "10.99.0.1"}] and back["Attachable"]
    )
    table = node.ok("network", "ls").stdout.splitlines()
    assert table[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert sorted(line.split()[1] for line in table[1:]) == ["back", "front", "ingress"]
    assert node.ok("network", "ls", "-q", "--filter", "label=tier=web").stdout.split() == [front_id[:12]]
    assert node.ok("network", "ls", "--format", "{{.Name}}", "--filter", "name=ba").stdout.split() == ["back"]

    _refused(node, 'network with name "front" already exists', "network", "create", "-d", "overlay", "front")
    _refused(node, "overlaps subnet 10.99.0.0/24", "network", "create", "--subnet", "10.99.0.128/25", "x")
    _refused(node, 'invalid --subnet "10.1.2.300/24"', "network", "create", "--subnet", "10.1.2.300/24", "x")
    create = ("service", "create", "--name", "x")
    _refused(node, 'network "nosuch" not found', *create, "--network", "nosuch", "alpine")
    _refused(node, "can't be used with dnsrr mode", *create, "--endpoint-mode", "dnsrr", "-p", "80", "alpine")
    _refused(
        node, 'invalid --endpoint-mode "rr": use vip or dnsrr', *create, "--endpoint-mode", "rr", "alpine"
    )

    node.ok(
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--network",
        "name=front,alias=www",
        "-p",
        "8080:80",
        "alpine",
    )
    (web,) = json.loads(node.ok("service", "inspect", "web").stdout)
    addrs = sorted(v["Addr"] for v in web["Endpoint"]["VirtualIPs"])
    assert addrs[0].startswith("10.0.0.") and addrs[1] == "10.0.1.2/24"  # ingress (it publishes), front

    _refused(node, 'network "front" is in use by service(s) web', "network", "rm", "front")
    _refused(node, "in use by services that publish ingress ports: web", "network", "rm", "ingress")
    node.ok("service", "update", "-d", "--network-add", "back", "web")
    (web,) = json.loads(node.ok("service", "inspect", "web").stdout)
    assert len(web["Spec"]["TaskTemplate"]["Networks"]) == 2 and len(web["Endpoint"]["VirtualIPs"]) == 3
    _refused(node, 'network "back" is in use by service(s) web', "network", "rm", "back")
    node.ok("service", "update", "-d", "--network-rm", "back", "web")
    # several names: each removed or refused on its own, as docker (exit 1 when any failed)
    removed = node.cli("network", "rm", "back", "nosuch", "front")
    assert (removed.returncode, removed.stdout.split()) == (1, ["back"])
    assert removed.stderr.splitlines() == [
        "Error: network nosuch not found",
        'Error: network "front" is in use by service(s) web: detach them '
        "(service update --network-rm) or remove them first",
    ]
    assert node.ok("network", "ls", "--format", "{{.Name}}", "--filter", "name=r").stdout.split() == [
        "front",
        "ingress",
    ]


def test_address_pool_of_swarm_init(node_factory: Any) -> None:
    bad: ShoalNode = node_factory(name="bad", runtime="fake")
    bad.start()
    refused = bad.cli("swarm", "init", "--advertise-addr", bad.addr, "--default-addr-pool", "10.20.0.0/33")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert 'invalid --default-addr-pool "10.20.0.0/33"' in refused.stderr
    assert bad.info()["Swarm"] == "inactive"

    node = _swarm(
        node_factory, "--default-addr-pool", "10.20.0.0/16", "--default-addr-pool-mask-length", "26"
    )
    node.ok("network", "create", "front")
    subnets = {
        n["Name"]: n["IPAM"]["Config"][0]["Subnet"]
        for n in json.loads(node.ok("network", "inspect", "ingress", "front").stdout)
    }
    assert subnets == {"ingress": "10.20.0.0/26", "front": "10.20.0.64/26"}


def _received(worker: ShoalNode) -> list[dict[str, Any]]:
    """Every NetworkState the worker's agent logged on receipt, oldest first."""
    marker = "network state received: "
    return [json.loads(line.split(marker, 1)[1]) for line in worker.log_text().splitlines() if marker in line]


def _backends(state: dict[str, Any]) -> list[str]:
    return sorted(b for port in state.get("ingressPorts", []) for b in port.get("backends", []))


def test_worker_agent_receives_its_network_state_and_its_changes(node_factory: Any) -> None:
    manager = _swarm(node_factory)
    worker: ShoalNode = node_factory(
        name="worker", runtime="fake", host="127.0.0.2", extra_args=["--log-level", "debug"]
    )
    worker.start()
    worker.join(manager)
    wait_until(
        lambda: "ingress" in [{}, *_received(worker)][-1], 30, what="the worker told its ingress address"
    )
    first = _received(worker)[-1]
    assert first["peerIps"] == ["127.0.0.1"]  # the manager; not itself
    assert first["ingress"]["addresses"][0].startswith("10.0.0.")  # its own ingress address

    manager.ok("network", "create", "front")
    manager.ok(
        "service", "create", "-d", "--name", "web", "--replicas", "2", "--network", "front",
        "-p", "8080:80", "--constraint", "node.role==worker", "alpine", "sleep", "3600",
    )  # fmt: skip

    def told() -> dict[str, Any]:
        return _received(worker)[-1]

    wait_until(lambda: len(manager.running("web")) == 2, 60, what="two running web tasks")
    ids = [t["ID"] for t in manager.running("web")]
    tasks = json.loads(manager.ok("inspect", "--type", "task", *ids).stdout)
    on = {  # network name -> the running tasks' addresses there, as the managers allocated them
        name: sorted(
            a.split("/")[0]
            for t in tasks
            for n in t["NetworksAttachments"]
            if n["Network"]["Spec"]["Name"] == name
            for a in n["Addresses"]
        )
        for name in ("ingress", "front")
    }
    wait_until(lambda: _backends(told()) == on["ingress"], 10, what="both tasks as backends at the worker")
    state = told()
    (port,) = state["ingressPorts"]
    assert (port["protocol"], port["published"], port["target"]) == ("tcp", 8080, 80)
    assert all(b.startswith("10.0.0.") for b in _backends(state))  # task addresses on ingress
    assert state["ingress"]["addresses"][0].split("/")[0] not in _backends(state)
    (records,) = state["records"]
    (record,) = records["records"]
    assert record["name"] == "web" and record["vip"].startswith("10.0.1.")
    assert sorted(record["taskAddresses"]) == on["front"]

    manager.ok("service", "scale", "-d", "web=1")
    wait_until(lambda: len(_backends(told())) == 1, 10, what="the worker told of the scale-down")


def _allocations(node: ShoalNode) -> tuple[list[str], list[str]]:
    """Every network's subnet, and every address held (VIPs and task addresses), as a manager
    shows them."""
    names = node.ok("network", "ls", "--format", "{{.Name}}").stdout.split()
    subnets = [
        n["IPAM"]["Config"][0]["Subnet"] for n in json.loads(node.ok("network", "inspect", *names).stdout)
    ]
    services = node.ok("service", "ls", "--format", "{{.Name}}").stdout.split()
    held = [
        v["Addr"]
        for s in json.loads(node.ok("service", "inspect", *services).stdout)
        for v in s["Endpoint"]["VirtualIPs"]
    ]
    ids = [t["ID"] for s in services for t in node.running(s)]
    for task in json.loads(node.ok("inspect", "--type", "task", *ids).stdout):
        held.extend(a for n in task["NetworksAttachments"] for a in n["Addresses"])
    return subnets, held


def test_a_new_leader_allocates_where_the_old_one_stopped(node_factory: Any) -> None:
    from test_ha_managers import leader_of

    managers = [node_factory(name=f"m{i}", runtime="fake", host=f"127.0.0.{i + 1}") for i in range(1, 4)]
    for m in managers:
        m.start()
    managers[0].init("--plugin", "network=fake")
    # The killed leader's node holds tasks until it is Down: a short heartbeat makes that (and
    # the new leader's start-up grace, two grace periods) seconds rather than half a minute.
    managers[0].ok("swarm", "update", "--dispatcher-heartbeat", "1s")
    for m in managers[1:]:
        m.join(managers[0], "manager")
    old = leader_of(managers)
    old.ok("network", "create", "front")
    old.ok(
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "3",
        "--network",
        "front",
        "-p",
        "80",
        "alpine",
    )
    wait_until(lambda: len(old.running("web")) == 3, 60, what="3 web tasks running")

    old.kill()
    survivors = [m for m in managers if m is not old]
    new = leader_of(survivors)
    new.ok("network", "create", "back")
    new.ok(
        "service", "create", "-d", "--name", "api", "--replicas", "3", "--network", "front", "--network", "back",
        "-p", "81", "alpine",
    )  # fmt: skip
    wait_until(
        lambda: len(new.running("api")) == 3 and len(new.running("web")) == 3, 90, what="api and web running"
    )
    subnets, held = _allocations(new)
    assert len(subnets) == len(set(subnets)) == 3  # ingress, front, back
    assert len(held) == len(set(held)), sorted(held)  # no address given twice across the failover
    assert len(held) == 5 + 3 * 2 + 3 * 3  # VIPs (web 2, api 3), web tasks 2 each, api tasks 3 each
