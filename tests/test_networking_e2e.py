"""Networking end to end (issue 14) on separate hosts: the routing mesh, overlay networks and
service discovery across nodes that run their own container engines.

Three hosts (tests/multihost.py): each a network namespace with its own dockerd and a
``shoal daemon`` inside it, joined by an underlay bridge; requests come from the underlay, as a
client outside the swarm would send them. One cluster serves every test of the module (CI time:
starting it costs ~10 s); the tests run in file order and the last one removes a node. A smaller
two-host Podman cluster checks the same data path with the other runtime
(tests/test_networking_e2e_podman.py, its own module so the two clusters never run at once).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import multihost
import pytest
from harness import wait_until
from multihost import Cluster, Host

pytestmark = [pytest.mark.cluster]

MESHLOAD = str(Path(__file__).resolve().parent.parent / "bench" / "meshload.py")
PY = sys.executable
IMAGE = "searchsvc:v1.0"
TASK_LABEL = "io.shoal.task.id"
ANSWER = "search result from "


@pytest.fixture(scope="module")
def swarm() -> Iterator[Cluster]:
    with multihost.cluster(3, "docker") as hosts:
        yield hosts
    assert not multihost.leftovers(hosts.tag), "the multi-host harness left namespaces or processes"


# ---------------------------------------------------------------------- helpers


def running(swarm: Cluster, service: str, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` running tasks of ``service``; return them."""

    def found() -> list[dict[str, Any]] | None:
        tasks = swarm.manager.running(service)
        return tasks if len(tasks) == count else None

    return wait_until(found, 180, 0.2, f"{count} running tasks of {service}")


def host_of(swarm: Cluster, task: dict[str, Any]) -> Host:
    return next(h for h in swarm.hosts if h.name == task["Node"])


def container_of(host: Host, task_id: str) -> str:
    found = host.engine_cli("ps", "-q", "--filter", f"label={TASK_LABEL}={task_id}").split()
    assert found, f"no container of task {task_id} on {host.name}"
    return found[0]


def in_task(swarm: Cluster, task: dict[str, Any], *argv: str, check: bool = False) -> tuple[int, str]:
    """Run a command in the task's container (busybox: wget, nslookup, ip). Bound wget with
    busybox ``timeout``: this static busybox's ``wget -T`` crashes (SIGSEGV, exit 139)."""
    host = host_of(swarm, task)
    proc = subprocess.run(
        [*host.engine_client(), "exec", container_of(host, task["ID"]), *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert proc.returncode == 0, f"{argv} in {task['ID']}: {proc.stderr}"
    return proc.returncode, proc.stdout + proc.stderr


def get_many(swarm: Cluster, url: str, count: int) -> list[tuple[bool, str]]:
    proc = swarm.client(PY, MESHLOAD, "get", "--count", str(count), "--timeout", "3", url, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [(bool(ok), str(body)) for ok, body in json.loads(proc.stdout)]


def wait_for_mesh(swarm: Cluster, host: Host, port: int, replicas: int) -> None:
    """Until requests to ``port`` on ``host`` reach all ``replicas`` (the mesh is in place)."""
    wait_until(
        lambda: len(replica_names(get_many(swarm, f"http://{host.ip}:{port}/", 2 * replicas))) == replicas,
        60,
        0.2,
        f"{host.name}:{port} to reach all {replicas} replicas",
    )


def replica_names(results: list[tuple[bool, str]]) -> set[str]:
    return {body.removeprefix(ANSWER) for ok, body in results if ok and body.startswith(ANSWER)}


def lookup(swarm: Cluster, task: dict[str, Any], name: str) -> list[str]:
    """The IPv4 addresses busybox nslookup gets for ``name`` in the task (its resolver's answer)."""
    _, out = in_task(swarm, task, "nslookup", "-type=a", name)
    answers = out.split(name, 1)[1] if f"Name:\t{name}" in out or f"Name: {name}" in out else ""
    return sorted(set(re.findall(r"Address:?\s+(\d+\.\d+\.\d+\.\d+)(?!:)", answers)))


def overlay_address(swarm: Cluster, task: dict[str, Any], subnet_prefix: str) -> str:
    _, out = in_task(swarm, task, "ip", "-4", "-o", "addr", check=True)
    found = re.findall(rf"inet ({re.escape(subnet_prefix)}\d+)/", out)
    assert found, f"task {task['ID']} has no address in {subnet_prefix}*: {out}"
    return found[0]


def network_subnet(swarm: Cluster, name: str) -> str:
    """``10.0.1.`` for a network allocated 10.0.1.0/24 (what its tasks' addresses start with)."""
    info = json.loads(swarm.manager.ok("network", "inspect", name).stdout)
    entry = info[0] if isinstance(info, list) else info
    configs = entry.get("IPAM", {}).get("Config", [])
    subnet = str(configs[0]["Subnet"])
    return subnet.rsplit(".", 1)[0] + "."


# ---------------------------------------------------------------------- routing mesh


def test_published_port_answers_on_every_host_and_reaches_every_replica(swarm: Cluster) -> None:
    """`-p 8080:8080 --replicas 4`: 60 requests to each host's address, h3 running no task of
    it, all answer, and together they reach all 4 replicas."""
    swarm.manager.ok(
        "service", "create", "--detach", "--name", "search", "--replicas", "4", "-p", "8080:8080",
        "--constraint", "node.hostname!=h3", IMAGE,
    )  # fmt: skip
    tasks = running(swarm, "search", 4)
    assert "h3" not in {t["Node"] for t in tasks}
    # The mesh follows the tasks within a second of their status: wait for it, then count.
    for host in swarm.hosts:
        wait_for_mesh(swarm, host, 8080, 4)
    seen: set[str] = set()
    for host in swarm.hosts:
        results = get_many(swarm, f"http://{host.ip}:8080/", 60)
        failed = [body for ok, body in results if not ok]
        assert not failed, f"{len(failed)} of 60 requests to {host.name} failed: {failed[:3]}"
        seen |= replica_names(results)
    assert len(seen) == 4, f"60 requests to each host reached {sorted(seen)}"


def test_killed_task_leaves_the_rotation_within_a_second_and_its_replacement_joins(swarm: Cluster) -> None:
    """Kill one replica's container: requests to the published port on a host without the task
    and on one with tasks fail for at most 1 s; the replacement then answers."""
    before = {t["ID"]: t for t in running(swarm, "search", 4)}
    victim = next(t for t in before.values() if t["Node"] == "h2")
    victim_host = host_of(swarm, victim)
    container = container_of(victim_host, victim["ID"])
    urls = [f"http://{swarm.hosts[2].ip}:8080/", f"http://{swarm.hosts[0].ip}:8080/"]
    prober = swarm.start_client(PY, MESHLOAD, "probe", "--interval", "0.01", "--timeout", "0.3", *urls)
    try:
        wait_until(lambda: answered(prober) >= 20, 15, 0.1, "the prober to get answers")
        killed_at = prober.json_lines()[-1]["t"]
        victim_host.engine_cli("kill", container)
        after = running_after_kill(swarm, before, victim["ID"])
        replacement = next(t for t in after if t["ID"] not in before)
        new_name = ANSWER + _hostname(host_of(swarm, replacement), replacement["ID"])
        # It joins from every node: through h3 (no task there) too, and it stays in: one more
        # second of requests after its first answer there.
        joined = wait_until(
            lambda: next(
                (
                    line["t"]
                    for line in prober.json_lines()
                    if line["ok"] and line["body"] == new_name and line["url"] == urls[0]
                ),
                None,
            ),
            30,
            0.1,
            "the replacement to answer through the mesh on h3",
        )
        wait_until(lambda: prober.json_lines()[-1]["t"] >= joined + 1.0, 10, 0.1, "a second more of requests")
    finally:
        prober.stop()
    failures = [line["t"] for line in prober.json_lines() if not line["ok"] and line["t"] >= killed_at]
    if failures:  # every failure in one window of at most a second (the kill's), none at the join
        span = max(failures) - min(failures)
        assert span <= 1.0, (
            f"requests failed from {min(failures) - killed_at:.2f}s to {max(failures) - killed_at:.2f}s "
            f"after the kill ({len(failures)} failures); the replacement answered at {joined - killed_at:.2f}s"
        )


def answered(prober: multihost.Client) -> int:
    prober.check_alive()
    return sum(1 for line in prober.json_lines() if line["ok"])


def running_after_kill(swarm: Cluster, before: dict[str, Any], victim: str) -> list[dict[str, Any]]:
    def replaced() -> list[dict[str, Any]] | None:
        tasks = swarm.manager.running("search")
        return tasks if len(tasks) == 4 and victim not in {t["ID"] for t in tasks} else None

    return wait_until(replaced, 60, 0.2, "the killed replica's replacement running")


def _hostname(host: Host, task_id: str) -> str:
    return host.engine_cli("inspect", "--format", "{{.Config.Hostname}}", container_of(host, task_id)).strip()


# ---------------------------------------------------------------------- overlay and discovery


def test_overlay_vip_tasks_dnsrr_and_isolation_across_hosts(swarm: Cluster) -> None:
    """Two services on one overlay network, on different hosts: `wget http://api:8080/` from
    web works through the VIP, `tasks.api` lists every task, dnsrr gives the task addresses;
    a service on another network reaches neither the name nor the addresses."""
    m = swarm.manager
    m.ok("network", "create", "-d", "overlay", "appnet")
    m.ok("network", "create", "-d", "overlay", "othernet")
    elsewhere = ("--constraint", "node.hostname!=h1")
    on_h1 = ("--constraint", "node.hostname==h1")
    m.ok(
        "service",
        "create",
        "--detach",
        "--name",
        "api",
        "--network",
        "appnet",
        "--replicas",
        "2",
        *elsewhere,
        IMAGE,
    )
    m.ok(
        "service", "create", "--detach", "--name", "apirr", "--network", "appnet", "--endpoint-mode", "dnsrr",
        "--replicas", "2", *elsewhere, IMAGE,
    )  # fmt: skip
    m.ok("service", "create", "--detach", "--name", "web", "--network", "appnet", *on_h1, IMAGE)
    m.ok("service", "create", "--detach", "--name", "other", "--network", "othernet", *on_h1, IMAGE)
    api, apirr = running(swarm, "api", 2), running(swarm, "apirr", 2)
    (web,), (other,) = running(swarm, "web", 1), running(swarm, "other", 1)
    assert {t["Node"] for t in api} <= {"h2", "h3"}

    appnet = network_subnet(swarm, "appnet")
    api_addresses = sorted(overlay_address(swarm, t, appnet) for t in api)
    apirr_addresses = sorted(overlay_address(swarm, t, appnet) for t in apirr)

    # VIP: one address, not a task's, answering through to the tasks on the other hosts.
    def through_vip() -> str:
        code, out = in_task(swarm, web, "timeout", "3", "wget", "-q", "-O-", "http://api:8080/")
        return out if code == 0 and ANSWER in out else ""

    wait_until(through_vip, 60, 0.3, "web to reach api by name")
    vip = wait_until(lambda: lookup(swarm, web, "api"), 30, 0.3, "api to resolve")
    assert len(vip) == 1 and vip[0] not in api_addresses and vip[0].startswith(appnet), vip
    answered = {through_vip() for _ in range(12)}
    assert len(answered) == 2, f"12 connections to the VIP reached {answered}"

    # tasks.NAME: every task; dnsrr: NAME itself gives the tasks, and works for wget.
    assert wait_until(lambda: lookup(swarm, web, "tasks.api") == api_addresses, 30, 0.3, "tasks.api")
    assert wait_until(lambda: lookup(swarm, web, "apirr") == apirr_addresses, 30, 0.3, "apirr (dnsrr)")
    code, out = in_task(swarm, web, "timeout", "3", "wget", "-q", "-O-", "http://apirr:8080/")
    assert code == 0 and ANSWER in out, out

    # Another network: no name, no route to api's tasks or VIP.
    assert lookup(swarm, other, "api") == []
    for address in [*api_addresses, vip[0]]:
        code, out = in_task(swarm, other, "timeout", "2", "wget", "-q", "-O-", f"http://{address}:8080/")
        assert code != 0, f"other (othernet) reached api at {address}: {out}"


# ---------------------------------------------------------------------- leaving (last: it changes the swarm)


def test_removed_node_leaves_no_devices_rules_or_namespaces(swarm: Cluster) -> None:
    """h3 (which served the mesh) leaves and is removed: its namespace shows only the links the
    harness and its engine made, and no nftables table at all."""
    host = swarm.hosts[2]
    node = host.shoal()
    node_id = node.node_id()
    assert any(link["ifname"].startswith("sh") for link in host.links()), "h3 had no shoal devices to remove"
    node.ok("swarm", "leave", "--force")
    wait_until(lambda: _node_down(swarm, node_id), 30, 0.3, "h3 to be seen down")
    swarm.manager.ok("node", "rm", "--force", node_id)
    names = sorted(link["ifname"] for link in host.links())
    assert set(names) <= {"lo", "eth0", "docker0"}, f"links left on h3: {names}"
    tables = [entry["table"] for entry in host.ruleset() if "table" in entry]
    assert not tables, f"nftables tables left on h3: {tables}"
    namespaces = multihost.run("ip", "netns", "list")
    assert node_id not in namespaces and "shoal" not in namespaces, namespaces


def _node_down(swarm: Cluster, node_id: str) -> bool:
    rows = swarm.manager.ok("node", "ls", "--format", "json").json_lines()
    return any(row.get("ID") == node_id and row.get("Status") != "Ready" for row in rows)
