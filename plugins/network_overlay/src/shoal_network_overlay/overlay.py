"""Overlay networks on one node: a bridge and a VXLAN device per network, a veth per endpoint.

For a network with VXLAN ID ``vni`` the node has a bridge ``shb<vni>`` with a VXLAN device
``shv<vni>`` (UDP 4789, sourced from the node's underlay address, no learning) enslaved to it;
the other nodes are all-zero FDB entries on the VXLAN device (head-end replication: broadcast
and unknown unicast go to every peer, which is how ARP finds a task on another node). A task's
endpoint is a veth pair: one end on the bridge, the other moved into the container's network
namespace, renamed ``eth<n>`` there and given the task's address. Tasks of one network reach
each other across nodes at layer 2; tasks of another network are in another bridge and another
subnet, with no route between them.

Every device this module creates carries the ``sh`` prefix and is remembered, so ``remove_all``
deletes exactly what it made. Commands are run as ``ip``/``bridge`` (iproute2, netlink); the
``prefix`` runs them in another namespace (the tests' nodes). Not driven by the agent yet: the
``overlay`` feature is declared once the managers allocate networks (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
from collections.abc import Sequence

from shoal.plugin import EndpointAttachment, NetworkError, NetworkSpec

VXLAN_PORT = 4789
_NETNS_PATH = re.compile(r"/run/netns/([A-Za-z0-9_.-]+)\Z")
_PROC_PATH = re.compile(r"/proc/([0-9]+)/ns/net\Z")


def bridge_name(vni: int) -> str:
    return f"shb{vni}"


def vxlan_name(vni: int) -> str:
    return f"shv{vni}"


def endpoint_name(task_id: str, network_id: str) -> str:
    """The host end of a task's veth (15 characters at most, stable for the pair)."""
    digest = hashlib.sha256(f"{task_id}/{network_id}".encode()).hexdigest()[:10]
    return f"she{digest}"


def _netns_target(sandbox: str) -> str:
    """What ``ip link set ... netns`` takes for a sandbox path: a PID or a named namespace."""
    for pattern in (_PROC_PATH, _NETNS_PATH):
        match = pattern.match(sandbox)
        if match:
            return match.group(1)
    raise NetworkError(f"overlay: sandbox {sandbox!r} is not /proc/<pid>/ns/net or /run/netns/<name>")


class OverlayDevices:
    """Creates and removes this node's overlay devices (see the module docstring)."""

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.prefix = tuple(prefix)
        self.networks: dict[str, NetworkSpec] = {}
        self.made: list[str] = []

    async def create_network(self, spec: NetworkSpec, local_ip: str) -> None:
        if spec.network_id in self.networks:
            return
        try:
            ipaddress.IPv4Network(spec.subnet)
            ipaddress.IPv4Address(local_ip)
        except ValueError as exc:
            raise NetworkError(f"overlay: network {spec.name}: {exc}") from None
        if not 1 <= spec.vni < 2**24:
            raise NetworkError(f"overlay: VXLAN ID {spec.vni} is out of range (1-16777215)")
        bridge, vxlan = bridge_name(spec.vni), vxlan_name(spec.vni)
        await self._ip("link", "add", bridge, "type", "bridge")
        self.made.append(bridge)
        await self._ip(
            "link", "add", vxlan, "type", "vxlan", "id", str(spec.vni), "dstport", str(VXLAN_PORT),
            "local", local_ip, "nolearning",
        )  # fmt: skip
        self.made.append(vxlan)
        await self._ip("link", "set", vxlan, "master", bridge)
        await self._ip("link", "set", vxlan, "up")
        await self._ip("link", "set", bridge, "up")
        self.networks[spec.network_id] = spec

    async def set_peers(self, network_id: str, peer_ips: Sequence[str]) -> None:
        """Flood entries for the other nodes (replacing the previous ones)."""
        vxlan = vxlan_name(self._spec(network_id).vni)
        await self._run("bridge", "fdb", "del", "00:00:00:00:00:00", "dev", vxlan, check=False)
        for peer in peer_ips:
            try:
                ipaddress.IPv4Address(peer)
            except ValueError as exc:
                raise NetworkError(f"overlay: peer {exc}") from None
            await self._run("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", vxlan, "dst", peer)

    async def attach(self, attachment: EndpointAttachment, interface: str = "eth1") -> None:
        spec = self._spec(attachment.network_id)
        try:
            address = ipaddress.IPv4Interface(attachment.address)
        except ValueError as exc:
            raise NetworkError(f"overlay: endpoint {exc}") from None
        if address.network != ipaddress.IPv4Network(spec.subnet):
            raise NetworkError(f"overlay: address {attachment.address} is not in {spec.subnet}")
        host_end = endpoint_name(attachment.task_id, attachment.network_id)
        target = _netns_target(attachment.sandbox)
        peer = f"{host_end}p"[:15]
        await self._ip("link", "add", host_end, "type", "veth", "peer", "name", peer)
        self.made.append(host_end)
        await self._ip("link", "set", host_end, "master", bridge_name(spec.vni))
        await self._ip("link", "set", host_end, "up")
        await self._ip("link", "set", peer, "netns", target)
        inside = ("nsenter", f"--net={attachment.sandbox}", "ip")
        await self._exec((*inside, "link", "set", peer, "name", interface))
        await self._exec((*inside, "addr", "add", str(address), "dev", interface))
        await self._exec((*inside, "link", "set", interface, "up"))

    async def detach(self, task_id: str, network_id: str) -> None:
        """Deleting the host end deletes the pair, wherever the other end is."""
        host_end = endpoint_name(task_id, network_id)
        await self._ip("link", "del", host_end, check=False)
        if host_end in self.made:
            self.made.remove(host_end)

    async def remove_network(self, network_id: str) -> None:
        spec = self.networks.pop(network_id, None)
        if spec is None:
            return
        for name in (vxlan_name(spec.vni), bridge_name(spec.vni)):
            await self._ip("link", "del", name, check=False)
            if name in self.made:
                self.made.remove(name)

    async def remove_all(self) -> None:
        """Delete every device this object made (endpoints first), missing ones included."""
        for name in reversed(self.made):
            await self._ip("link", "del", name, check=False)
        self.made.clear()
        self.networks.clear()

    def _spec(self, network_id: str) -> NetworkSpec:
        spec = self.networks.get(network_id)
        if spec is None:
            raise NetworkError(f"overlay: network {network_id} does not exist on this node")
        return spec

    async def _ip(self, *args: str, check: bool = True) -> None:
        await self._run("ip", *args, check=check)

    async def _run(self, tool: str, *args: str, check: bool = True) -> None:
        await self._exec((*self.prefix, tool, *args), check=check)

    async def _exec(self, command: Sequence[str], check: bool = True) -> None:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if check and proc.returncode != 0:
            first = (err.decode(errors="replace").strip().splitlines() or ["no message"])[0]
            raise NetworkError(f"overlay: {' '.join(command[len(self.prefix) :][:3])} failed: {first}")
