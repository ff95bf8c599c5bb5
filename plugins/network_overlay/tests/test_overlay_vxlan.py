"""Overlay networks on real kernel networking: two nodes, each its own network namespace joined
by an underlay veth, VXLAN between them; tasks are namespaces attached to the overlay.

    task1 (net A 10.0.1.2) ─ node1 192.168.77.1 ═ underlay ═ 192.168.77.2 node2 ─ task2 (net A 10.0.1.3)
                                                                               └─ task3 (net B 10.0.2.3)

A task reaches a task of its network on the other node; a task of another network is not
reachable; removal leaves each node with only what the test gave it. The host is not touched.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from shoal.roles.network import EndpointAttachment, NetworkError, NetworkSpec
from shoal_network_overlay.overlay import OverlayDevices

NET_A = NetworkSpec("neta", "a", "10.0.1.0/24", "10.0.1.1", 4242)
NET_B = NetworkSpec("netb", "b", "10.0.2.0/24", "10.0.2.1", 4343)
UNDERLAY = {"node1": "192.168.77.1", "node2": "192.168.77.2"}

#: Serves one line ("<name>") on port 9000 of every address, forever.
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen()
while True:
    c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()
"""
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 9000), timeout=2) as c:
        print(c.recv(100).decode())
except OSError as exc:
    print(f"unreachable: {exc.__class__.__name__}")
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _links(namespace: str) -> list[str]:
    out = subprocess.run(["ip", "-n", namespace, "-j", "link"], check=True, capture_output=True, text=True)
    return sorted(link["ifname"] for link in json.loads(out.stdout))


@pytest.fixture
def spaces() -> Iterator[dict[str, str]]:
    for tool in ("ip", "bridge", "nsenter"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/install-deps.sh installs iproute2)")
    tag = secrets.token_hex(3)
    names = {role: f"shoal-v{tag}-{role}" for role in ("node1", "node2", "task1", "task2", "task3")}
    try:
        for name in names.values():
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip(
            "link",
            "add",
            f"shu{tag}a",
            "netns",
            names["node1"],
            "type",
            "veth",
            "peer",
            f"shu{tag}b",
            "netns",
            names["node2"],
        )
        for node, device in (("node1", f"shu{tag}a"), ("node2", f"shu{tag}b")):
            _ip("-n", names[node], "addr", "add", f"{UNDERLAY[node]}/24", "dev", device)
            _ip("-n", names[node], "link", "set", device, "up")
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_tasks_of_one_network_reach_each_other_across_nodes_and_no_other(spaces: dict[str, str]) -> None:
    nodes = {
        n: OverlayDevices(prefix=("nsenter", f"--net=/run/netns/{spaces[n]}")) for n in ("node1", "node2")
    }
    before = {n: _links(spaces[n]) for n in nodes}
    servers = [
        subprocess.Popen(["nsenter", f"--net=/run/netns/{spaces[t]}", sys.executable, "-c", SERVER, t])
        for t in ("task2", "task3")
    ]

    def attach(node: str, task: str, spec: NetworkSpec, address: str) -> None:
        sandbox = f"/run/netns/{spaces[task]}"
        asyncio.run(nodes[node].attach(EndpointAttachment(task, spec.network_id, address, (task,), sandbox)))

    def ask(task: str, address: str) -> str:
        run = subprocess.run(
            ["nsenter", f"--net=/run/netns/{spaces[task]}", sys.executable, "-c", CLIENT, address],
            capture_output=True,
            text=True,
            check=True,
        )
        return run.stdout.strip()

    try:
        for node, other in (("node1", "node2"), ("node2", "node1")):
            for spec in (NET_A, NET_B):
                asyncio.run(nodes[node].create_network(spec, UNDERLAY[node]))
                asyncio.run(nodes[node].create_network(spec, UNDERLAY[node]))  # idempotent
                asyncio.run(nodes[node].set_peers(spec.network_id, [UNDERLAY[other]]))
        attach("node1", "task1", NET_A, "10.0.1.2/24")
        attach("node2", "task2", NET_A, "10.0.1.3/24")
        attach("node2", "task3", NET_B, "10.0.2.3/24")

        answer = ""
        for _ in range(50):  # the server may still be starting: a bounded retry, no fixed sleep
            answer = ask("task1", "10.0.1.3")
            if answer == "task2":
                break
        assert answer == "task2"
        assert ask("task1", "10.0.2.3").startswith("unreachable")  # another network: no route

        with pytest.raises(NetworkError, match=r"is not in 10\.0\.1\.0/24"):
            attach("node1", "task1", NET_A, "10.0.9.9/24")

        asyncio.run(nodes["node2"].detach("task2", NET_A.network_id))
        assert ask("task1", "10.0.1.3").startswith("unreachable")
        for node in nodes.values():
            asyncio.run(node.remove_all())
            asyncio.run(node.remove_all())
        assert {n: _links(spaces[n]) for n in nodes} == before
        assert _links(spaces["task1"]) == ["lo"]  # the task's end went with the pair
    finally:
        for server in servers:
            server.kill()
            server.wait()
