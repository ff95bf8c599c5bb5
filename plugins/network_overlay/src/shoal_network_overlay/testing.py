"""Test support: a small lab of network namespaces for the data-path tests: "hosts" on one LAN, "containers".

    lan (bridge, client 192.168.50.100) ── h1 192.168.50.1   h2 192.168.50.2   h3 192.168.50.3
                                             (each host a namespace with eth0 on the LAN)
    containers c1..cN: empty namespaces with lo up, attached by the provider under test

Everything is created with a random tag and removed at teardown, whatever happened; the host's
own namespace is never changed. Commands that must not block the test's event loop (the
provider's DNS servers run on it) go through ``Lab.sh``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HOSTS = {"h1": "192.168.50.1", "h2": "192.168.50.2", "h3": "192.168.50.3"}
CLIENT_ADDRESS = "192.168.50.100"

#: Answers "<name>" on TCP port PORT of every address: one line per connection (HTTP/1.0-ish
#: for curl-free clients: the client reads until close).
SERVER = """
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.settimeout(1); c.recv(1024)
    except OSError:
        pass
    c.sendall(f"HTTP/1.0 200 OK\\r\\nContent-Length: {len(name)}\\r\\n\\r\\n{name}".encode()); c.close()
"""

#: N connections to host:port, one answer a line ("" for a failure).
CLIENT = """
import socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    try:
        with socket.create_connection((host, port), timeout=2) as c:
            c.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            data = b""
            while chunk := c.recv(4096):
                data += chunk
        print(data.split(b"\\r\\n\\r\\n", 1)[-1].decode())
    except OSError:
        print("")
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Lab:
    tag: str
    names: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def path(self, role: str) -> str:
        return f"/run/netns/{self.names[role]}"

    async def sh(self, role: str, *command: str, check: bool = True) -> str:
        """Run ``command`` in ``role``'s namespace without blocking the event loop; stdout."""
        out, _ = await self.sh_both(role, *command, check=check)
        return out

    async def sh_both(self, role: str, *command: str, check: bool = True) -> tuple[str, str]:
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={self.path(role)}", *command,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        if check and proc.returncode != 0:
            raise AssertionError(f"{command} in {role}: {err.decode()}")
        return out.decode(), err.decode()

    def links(self, role: str) -> list[str]:
        out = subprocess.run(
            ["ip", "-n", self.names[role], "-j", "link"], check=True, capture_output=True, text=True
        ).stdout
        return sorted(link["ifname"] for link in json.loads(out))

    def ruleset(self, role: str) -> object:
        out = subprocess.run(
            ["nsenter", f"--net={self.path(role)}", "nft", "-j", "list", "ruleset"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        items = json.loads(out)["nftables"]
        return [_without_counts(item) for item in items if "metainfo" not in item]

    def snapshot(self, *roles: str) -> dict[str, object]:
        """What ``cleanup`` must give back: each namespace's devices and nftables ruleset."""
        return {role: (self.links(role), self.ruleset(role)) for role in roles}

    def serve(self, role: str, name: str, port: int) -> None:
        """Run the test server in ``role``'s namespace, answering ``name`` on ``port``."""
        self.serve_script(role, SERVER, name, str(port))

    def serve_script(self, role: str, script: str, *args: str) -> subprocess.Popen[bytes]:
        """Run a Python ``script`` in ``role``'s namespace until teardown; it prints ``ready``
        once it listens (returns then: no sleep)."""
        proc = subprocess.Popen(
            ["nsenter", f"--net={self.path(role)}", sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.processes.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return proc

    def remove(self) -> None:
        for proc in self.processes:
            proc.kill()
            proc.wait()
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    async def requests(self, role: str, host: str, port: int, count: int) -> list[str]:
        out = await self.sh(role, sys.executable, "-c", CLIENT, host, str(port), str(count))
        return out.splitlines()


def _without_counts(value: object) -> object:
    """The ruleset without packet and byte counts (traffic changes them, not the rules)."""
    if isinstance(value, dict):
        return {k: _without_counts(v) for k, v in value.items() if k not in ("packets", "bytes")}
    if isinstance(value, list):
        return [_without_counts(v) for v in value]
    return value


def make_lab(containers: int) -> Lab:
    """Create the namespaces (see the module docstring); ``remove`` deletes them."""
    for tool in ("ip", "nft", "nsenter", "iptables", "bridge"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (scripts/install-deps.sh installs it)")
    tag = secrets.token_hex(3)
    roles = ["lan", *HOSTS, *(f"c{n}" for n in range(1, containers + 1))]
    lab = Lab(tag, {role: f"shoal-n{tag}-{role}" for role in roles})
    try:
        for name in lab.names.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        lan = lab.names["lan"]
        ip("-n", lan, "link", "add", "lan", "type", "bridge")
        ip("-n", lan, "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", "lan")
        ip("-n", lan, "link", "set", "lan", "up")
        for host, address in HOSTS.items():
            port = f"lx{tag}{host}"
            ip("link", "add", port, "netns", lan, "type", "veth", "peer", "eth0", "netns", lab.names[host])
            ip("-n", lan, "link", "set", port, "master", "lan", "up")
            ip("-n", lab.names[host], "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", lab.names[host], "link", "set", "eth0", "up")
    except BaseException:
        lab.remove()
        raise
    return lab


def resolv_conf(tmp_path: Path, *nameservers: str) -> Path:
    path = tmp_path / f"resolv-{secrets.token_hex(2)}.conf"
    path.write_text("".join(f"nameserver {n}\n" for n in nameservers))
    return path
