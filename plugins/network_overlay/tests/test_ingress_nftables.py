"""The routing mesh's nftables data path, on real kernel networking in namespaces the test makes.

Topology (all in fresh network namespaces, removed at teardown; the host's own networking and
nftables are never touched):

    client 10.77.9.2 ── 10.77.9.1  node  10.77.1.1 ── 10.77.1.2 task1 (HTTP :80, answers "task1")
                                         10.77.2.1 ── 10.77.2.2 task2 (HTTP :80, answers "task2")

The node's ``table ip shoal`` forwards port 8080 on its address to the tasks' port 80.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from shoal.roles.network import NetworkError
from shoal_network_overlay.ingress import Forward, IngressTable, ruleset

NODE_ADDR = "10.77.9.1"
TASKS = {"task1": "10.77.1.2", "task2": "10.77.2.2"}

SERVER = """
import http.server, sys
name = sys.argv[1]
class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 80), Answer).serve_forever()
"""

#: Runs in the client namespace: N requests (new connection each) to host:port, one answer a
#: line ("" for a failure); or, with "keep", one connection kept open across a pause.
CLIENT = """
import http.client, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    try:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        conn.request("GET", "/")
        print(conn.getresponse().read().decode())
        conn.close()
    except OSError:
        print("")
"""


# --------------------------------------------------------------------------- ruleset logic


def test_ruleset_spreads_each_port_over_its_backends_and_skips_empty_ones() -> None:
    script = ruleset(
        [
            Forward("tcp", 8080, 80, ("10.0.0.2", "10.0.0.3")),
            Forward("udp", 5353, 53, ("10.0.0.4",)),
            Forward("tcp", 9090, 90, ()),
        ]
    )
    assert script.startswith("table ip shoal\ndelete table ip shoal\ntable ip shoal {\n")
    assert "tcp dport 8080 dnat to numgen inc mod 2 map { 0 : 10.0.0.2, 1 : 10.0.0.3 } : 80" in script
    assert "udp dport 5353 dnat to numgen inc mod 1 map { 0 : 10.0.0.4 } : 53" in script
    assert "9090" not in script  # no backend: no rule, the port is closed
    assert script.count("ip daddr != 127.0.0.0/8") == 2  # output hook only, one per live port


@pytest.mark.parametrize(
    "forward",
    [
        Forward("sctp", 8080, 80, ("10.0.0.2",)),
        Forward("tcp", 0, 80, ("10.0.0.2",)),
        Forward("tcp", 8080, 70000, ("10.0.0.2",)),
        Forward("tcp", 8080, 80, ("10.0.0.2; flush ruleset",)),
    ],
)
def test_values_that_could_change_the_script_are_refused(forward: Forward) -> None:
    with pytest.raises(NetworkError):
        ruleset([forward])


# --------------------------------------------------------------------------- real data path


@dataclass
class Lab:
    """Four namespaces by role (node, client, task1, task2) and the task servers."""

    names: dict[str, str]
    servers: list[subprocess.Popen[bytes]]

    def path(self, role: str) -> str:
        return f"/run/netns/{self.names[role]}"

    def run(self, role: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net={self.path(role)}", *command], capture_output=True, text=True, check=check
        )

    def answers(self, count: int) -> list[str]:
        out = self.run("client", sys.executable, "-c", CLIENT, NODE_ADDR, "8080", str(count)).stdout
        return out.splitlines()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


#: (role, its address, the node's address on the link)
LINKS = [
    ("client", "10.77.9.2", NODE_ADDR),
    ("task1", TASKS["task1"], "10.77.1.1"),
    ("task2", TASKS["task2"], "10.77.2.1"),
]


@pytest.fixture
def lab() -> Iterator[Lab]:
    for tool in ("ip", "nft", "nsenter"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/install-deps.sh installs iproute2 and nftables)")
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root")
    tag = secrets.token_hex(3)
    lab = Lab({role: f"shoal-t{tag}-{role}" for role in ("node", "client", "task1", "task2")}, [])
    node = lab.names["node"]
    try:
        for name in lab.names.values():
            _ip("netns", "add", name)
        for index, (role, far, near) in enumerate(LINKS):
            near_dev, far_dev, other = f"sh{tag}n{index}", f"sh{tag}f{index}", lab.names[role]
            _ip("link", "add", near_dev, "netns", node, "type", "veth", "peer", far_dev, "netns", other)
            _ip("-n", node, "addr", "add", f"{near}/24", "dev", near_dev)
            _ip("-n", node, "link", "set", near_dev, "up")
            _ip("-n", other, "addr", "add", f"{far}/24", "dev", far_dev)
            _ip("-n", other, "link", "set", far_dev, "up")
            _ip("-n", other, "link", "set", "lo", "up")
            _ip("-n", other, "route", "add", "default", "via", near)
        _ip("-n", node, "link", "set", "lo", "up")
        lab.run("node", "sysctl", "-qw", "net.ipv4.ip_forward=1")  # inside the node namespace only
        for task in TASKS:
            lab.servers.append(
                subprocess.Popen(
                    ["nsenter", f"--net={lab.path(task)}", sys.executable, "-c", SERVER, task],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield lab
    finally:
        for server in lab.servers:
            server.kill()
            server.wait()
        for name in lab.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _wait_servers(lab: Lab) -> None:
    deadline = time.monotonic() + 20
    for address in TASKS.values():
        while True:
            probe = lab.run("client", sys.executable, "-c", CLIENT, address, "80", "1", check=False)
            if probe.stdout.strip():
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the task server at {address} never answered")
            time.sleep(0.1)


def test_published_port_spreads_over_tasks_follows_changes_and_leaves_nothing(lab: Lab) -> None:
    _wait_servers(lab)
    table = IngressTable(nft=("nsenter", f"--net={lab.path('node')}", "nft"))
    tables_before = lab.run("node", "nft", "-j", "list", "tables").stdout

    asyncio.run(table.publish(Forward("tcp", 8080, 80, tuple(TASKS.values()))))
    answers = lab.answers(20)
    assert sorted(set(answers)) == ["task1", "task2"], answers
    assert answers.count("task1") == answers.count("task2") == 10  # numgen inc: strict rotation

    # task1 leaves the rotation: every new connection from the moment publish returns goes to task2
    asyncio.run(table.publish(Forward("tcp", 8080, 80, (TASKS["task2"],))))
    assert lab.answers(10) == ["task2"] * 10

    # no backend: the port is closed (refused, not hanging)
    asyncio.run(table.publish(Forward("tcp", 8080, 80, ())))
    assert lab.answers(2) == ["", ""]

    asyncio.run(table.remove())
    asyncio.run(table.remove())  # idempotent
    rules = json.loads(lab.run("node", "nft", "-j", "list", "ruleset").stdout)["nftables"]
    assert not [item for item in rules if item.get("table", {}).get("name") == "shoal"], rules
    assert lab.run("node", "nft", "-j", "list", "tables").stdout == tables_before


def test_nft_errors_are_one_line(lab: Lab) -> None:
    table = IngressTable(nft=("nsenter", f"--net={lab.path('node')}", "nft", "--no-such-flag"))
    with pytest.raises(NetworkError) as refused:
        asyncio.run(table.publish(Forward("tcp", 8080, 80, (TASKS["task1"],))))
    assert "\n" not in str(refused.value) and str(refused.value).startswith(
        "ingress: nft refused the ruleset:"
    )
    missing = IngressTable(nft=(str(Path("/nonexistent/nft")),))
    with pytest.raises(NetworkError, match="install nftables"):
        asyncio.run(missing.publish(Forward("tcp", 8080, 80, (TASKS["task1"],))))
