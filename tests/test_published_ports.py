"""Published ports on a one-node cluster on each real engine.

``mode=host``: the engine binds the port where the task runs (curl reaches the replica), the
scheduler keeps one task per node per port, ``--publish-rm`` is a rolling update that unbinds
it. ``mode=ingress`` (the default): one published port per swarm, a conflict refused with one
line and nothing created.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from engines import Engine
from harness import ShoalNode, free_port, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.engine]

SEARCH_IMAGE = "searchsvc:v1.0"


def answer(port: int) -> str:
    """What the service on 127.0.0.1:port answers, or "" when nothing does."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return str(response.read().decode(errors="replace"))
    except (OSError, urllib.error.URLError):
        return ""


def test_host_mode_port_is_bound_by_the_engine(
    node_factory: object, runtime_name: str, engine: Engine
) -> None:
    engine.require_image(SEARCH_IMAGE)
    node: ShoalNode = node_factory(runtime=runtime_name)  # type: ignore[operator]
    node.start()
    node.init()
    wait_until(lambda: node.info().get("AgentConnected"), 20, what="the agent to open its session")
    port = free_port()
    publish = f"published={port},target=8080,mode=host"
    node.ok("service", "create", "--name", "search", "--detach", "-p", publish, SEARCH_IMAGE)

    wait_until(lambda: "search result from" in answer(port), 90, what=f"the replica answering on port {port}")

    def running_ports() -> list[str]:
        rows = node.ok("service", "ps", "search", "--format", "json").json_lines()
        return [r["Ports"] for r in rows if r["CurrentState"].startswith("Running")]

    wait_until(lambda: running_ports() == [f"*:{port}->8080/tcp"], 30, what="service ps showing the port")
    (service,) = json.loads(node.ok("service", "inspect", "search").stdout)
    assert service["Endpoint"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": port, "PublishMode": "host"}
    ]

    # one task per node per host port: a second replica has nowhere to go on a one-node swarm
    node.ok("service", "scale", "--detach", "search=2")
    wait_until(
        lambda: any(
            "host-mode port already in use" in r["Error"] + r["CurrentState"] + str(r.get("Message", ""))
            or r["CurrentState"].startswith("Pending")
            for r in node.ok("service", "ps", "search", "--format", "json").json_lines()
        ),
        30,
        what="the second replica pending on the host-port filter",
    )
    assert len(engine.service_containers(node.node_id(), "search")) == 1

    node.ok("service", "update", "--detach", "--publish-rm", "8080", "search")
    wait_until(lambda: answer(port) == "", 90, what=f"port {port} unbound after --publish-rm")


def test_ingress_ports_are_allocated_once_in_the_swarm(node_factory: object) -> None:
    """With a network plugin that declares the routing mesh (the in-memory fake: allocation is
    the managers' business; the mesh's data path is tested in test_networking_e2e), an ingress
    port is taken swarm-wide: a second service asking for it is refused with one line, nothing
    changed. (A plugin without the ``ingress`` feature: refused, core/tests/test_published_ports.)"""
    node: ShoalNode = node_factory(runtime="fake")  # type: ignore[operator]
    node.start()
    node.init("--plugin", "network=fake")
    node.ok("service", "create", "--name", "web", "-d", "-p", "8080:80", "-p", "90", SEARCH_IMAGE)
    assert (
        node.ok("service", "ls", "--format", "{{.Ports}}").stdout.strip() == "*:8080->80/tcp, *:30000->90/tcp"
    )
    before = node.ok("service", "ls", "--format", "json").stdout
    for args, says in [
        (["-p", "8080:81"], 'port 8080/tcp is already published by service "web"'),
        (["-p", "8080:80/sctp"], 'protocol "sctp" is not supported; use tcp or udp'),
        (["--endpoint-mode", "dnsrr", "-p", "81"], "can't be used with dnsrr mode"),
    ]:
        refused = node.cli("service", "create", "--name", "api", "-d", *args, SEARCH_IMAGE)
        assert refused.returncode != 0
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], refused.stderr
    assert node.ok("service", "ls", "--format", "json").stdout == before
