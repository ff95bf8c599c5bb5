"""Overlay networks on one node: a bridge and a VXLAN device per network, a veth per endpoint.

For a network with VXLAN ID ``vni`` the node has a bridge ``shb<node><vni>`` with a VXLAN
device ``shv<node><vni>`` (UDP 4789, sourced from the node's underlay address) enslaved to it.
The other nodes are all-zero FDB entries on the VXLAN device: head-end replication, so
broadcast and unknown unicast (ARP looking for a task on another node) go to every peer, and
the device learns from the answers which peer holds which task, so later unicast goes to that
peer only. No multicast underlay and no control plane are needed: ``set_peers`` is the whole
membership. A task's endpoint is a veth pair: one end on the bridge, the other moved into the
container's network namespace, renamed ``eth<n>`` (the first free) and given the task's
address. Tasks of one network meet at layer 2 across nodes; another network is another bridge
and subnet, and the bridges of ordinary networks carry no address, so the node routes nothing
between them. Only the ingress network's bridge gets the node's own address (``host_address``):
it is where the routing mesh forwards published ports.

An endpoint's MAC is derived from its address (``arp.mac_for``) and it announces itself with a
gratuitous ARP once attached: a replacement task that reuses its predecessor's address is
reached at once, by the other tasks' neighbour caches and the nodes' learned entries alike.

MTU: the veth ends get 1450 (1500 minus VXLAN's 50 bytes), so a full-size frame from a task
fits through the tunnel instead of being dropped by the bridge.

Every device name carries the node digest (``names.py``): ``start`` adopts what is there, and
``remove_all`` finds exactly this node's devices by listing them, even after a restart.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Sequence

from shoal.plugin import EndpointAttachment, NetworkError, NetworkSpec

from shoal_network_overlay.arp import announce, mac_for
from shoal_network_overlay.commands import Commands
from shoal_network_overlay.names import (
    BRIDGE,
    ENDPOINT,
    PEER,
    VXLAN,
    bridge_name,
    endpoint_name,
    is_ours,
    peer_name,
    vxlan_name,
)
from shoal_network_overlay.shortcut import (
    answers_script,
    block_prefs,
    bridge_port_script,
    prefs_redirecting_to,
    redirect_script,
    reverse_fits,
    to_node_script,
)

log = logging.getLogger(__name__)

VXLAN_PORT = 4789
MTU = 1450
ZERO_MAC = "00:00:00:00:00:00"
_NETNS_PATH = re.compile(r"/run/netns/([A-Za-z0-9_.-]+)\Z")
_PROC_PATH = re.compile(r"/proc/([0-9]+)/ns/net\Z")


def netns_target(sandbox: str) -> str:
    """What ``ip link set ... netns`` takes for a sandbox path: a PID or a named namespace."""
    for pattern in (_PROC_PATH, _NETNS_PATH):
        match = pattern.match(sandbox)
        if match:
            return match.group(1)
    raise NetworkError(f"overlay: sandbox {sandbox!r} is not /proc/<pid>/ns/net or /run/netns/<name>")


def _ipv4(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise NetworkError(f"overlay: {what} {value!r} is not an IPv4 address") from None


def check_spec(spec: NetworkSpec) -> None:
    """Only well-formed values reach the kernel tools (no option injection, clear errors)."""
    try:
        subnet = ipaddress.IPv4Network(spec.subnet)
    except ValueError:
        raise NetworkError(
            f"overlay: network {spec.name}: subnet {spec.subnet!r} is not an IPv4 CIDR"
        ) from None
    if not 1 <= spec.vni < 2**24:
        raise NetworkError(f"overlay: network {spec.name}: VXLAN ID {spec.vni} is out of range (1-16777215)")
    if spec.host_address:
        try:
            host = ipaddress.IPv4Interface(spec.host_address)
        except ValueError:
            raise NetworkError(
                f"overlay: network {spec.name}: host address {spec.host_address!r} is not an IPv4 CIDR"
            ) from None
        if host.network != subnet:
            raise NetworkError(
                f"overlay: network {spec.name}: host address {spec.host_address} is not in {subnet}"
            )


class OverlayDevices:
    """Creates, adopts and removes this node's overlay devices (see the module docstring)."""

    def __init__(self, commands: Commands, digest: str, local_ip: str) -> None:
        self.commands = commands
        self.digest = digest
        self.local_ip = str(_ipv4(local_ip, "advertise address"))
        self.networks: dict[str, NetworkSpec] = {}
        self.peers: tuple[str, ...] = ()
        #: Networks with a VXLAN device of this node (all but those sharing a namespace's ID).
        self.tunnelled: set[str] = set()

    def bridge(self, spec: NetworkSpec) -> str:
        return bridge_name(self.digest, spec.vni)

    async def links(self, netns: str | None = None) -> list[str]:
        out = await self.commands.run("ip", "-j", "link", "show", netns=netns)
        return [link["ifname"] for link in json.loads(out or "[]")]

    async def create_network(self, spec: NetworkSpec) -> None:
        """Create (or adopt, after a restart) the network's bridge and VXLAN device.

        Several nodes may share one network namespace (tests); the kernel allows one VXLAN
        device per VXLAN ID there. When another node's device already has this ID, this node
        gets the bridge alone: its tasks on the network reach each other and the node, not the
        other nodes (logged once, as a warning)."""
        check_spec(spec)
        bridge, vxlan = bridge_name(self.digest, spec.vni), vxlan_name(self.digest, spec.vni)
        present = await self.links()
        owner = None if vxlan in present else await self._vxlan_owner(spec.vni)
        if owner is not None:
            log.warning(
                "overlay: VXLAN ID %d is in use in this network namespace (device %s, another node "
                "here?): network %s reaches no other node from this one",
                spec.vni, owner, spec.name,
            )  # fmt: skip
        batch = []
        if bridge not in present:
            batch.append(f"link add {bridge} type bridge")
        if vxlan not in present and owner is None:
            batch.append(
                f"link add {vxlan} mtu {MTU} type vxlan id {spec.vni} dstport {VXLAN_PORT} local {self.local_ip}"
            )
        if owner is None:
            batch += [f"link set {vxlan} master {bridge}", f"link set {vxlan} up"]
        if spec.host_address:
            # A bridge left to itself takes the lowest MAC among its ports, so it would change as
            # tasks come and go, and neighbours holding the old one would lose frames until they
            # asked again: the node's address on the network gets the MAC derived from it.
            batch.append(f"link set {bridge} address {mac_for(spec.host_address)}")
            if owner is None and spec.ingress:  # the tunnel's shortcut to the node (``shortcut``)
                batch.append(f"link set {vxlan} address {mac_for(spec.host_address)}")
        batch.append(f"link set {bridge} up")
        if spec.host_address:
            batch.append(f"address replace {spec.host_address} dev {bridge}")
        try:
            await self.commands.run("ip", "-batch", "-", stdin="\n".join(batch) + "\n")
        except NetworkError as exc:
            for made in (vxlan, bridge):  # leave nothing half-made
                if made not in present:
                    await self.commands.run("ip", "link", "del", made, check=False)
            raise NetworkError(f"overlay: cannot create network {spec.name}: {exc}") from None
        self.networks[spec.network_id] = spec
        if owner is None:
            self.tunnelled.add(spec.network_id)
            await self._flood(spec, self.peers)
            if spec.ingress and spec.host_address:
                # an optimisation, like the task shortcuts: without tc, frames take the bridge
                script = to_node_script(vxlan, bridge, spec.host_address)
                await self.commands.run("tc", "-force", "-batch", "-", stdin=script, check=False)
                await self._join_block(spec, vxlan, bridge, [spec.host_address], side="egress")

    async def _vxlan_owner(self, vni: int) -> str | None:
        """The VXLAN device with ID ``vni`` in this namespace, if any."""
        out = await self.commands.run("ip", "-d", "-j", "link", "show", "type", "vxlan")
        for link in json.loads(out or "[]"):
            if link.get("linkinfo", {}).get("info_data", {}).get("id") == vni:
                return str(link.get("ifname"))
        return None

    async def set_peers(self, peer_ips: Sequence[str]) -> None:
        """Replace the flood list of every network (and remember it for networks made later)."""
        peers = tuple(dict.fromkeys(str(_ipv4(peer, "peer")) for peer in peer_ips if peer != self.local_ip))
        self.peers = peers
        for spec in self.networks.values():
            await self._flood(spec, peers)

    async def _flood(self, spec: NetworkSpec, peers: Sequence[str]) -> None:
        if spec.network_id not in self.tunnelled:
            return  # another node's device has this VXLAN ID here (see create_network)
        vxlan = vxlan_name(self.digest, spec.vni)
        out = await self.commands.run("bridge", "-j", "fdb", "show", "dev", vxlan)
        current = {entry.get("dst") for entry in json.loads(out or "[]") if entry.get("mac") == ZERO_MAC}
        batch = [f"fdb del {ZERO_MAC} dev {vxlan} dst {dst}" for dst in sorted(current - set(peers)) if dst]
        batch += [f"fdb append {ZERO_MAC} dev {vxlan} dst {dst}" for dst in peers if dst not in current]
        if batch:
            await self.commands.run("bridge", "-batch", "-", stdin="\n".join(batch) + "\n")

    async def attach(self, attachment: EndpointAttachment) -> None:
        """Give the container its interface on the network (nothing to do when it has it)."""
        spec = self._spec(attachment.network_id)
        try:
            address = ipaddress.IPv4Interface(attachment.address)
        except ValueError:
            raise NetworkError(
                f"overlay: endpoint address {attachment.address!r} is not an IPv4 CIDR"
            ) from None
        if address.network != ipaddress.IPv4Network(spec.subnet):
            raise NetworkError(f"overlay: address {attachment.address} is not in {spec.subnet}")
        target = netns_target(attachment.sandbox)
        host_end = endpoint_name(self.digest, attachment.task_id, attachment.network_id)
        peer = peer_name(self.digest, attachment.task_id, attachment.network_id)
        if host_end in await self.links():
            return
        mac = mac_for(str(address))
        try:
            inside = await self.links(netns=attachment.sandbox)
            interface = next(f"eth{n}" for n in range(len(inside) + 1) if f"eth{n}" not in inside)
            await self.commands.run(
                "ip", "-batch", "-",
                stdin=(
                    f"link add {host_end} mtu {MTU} type veth peer name {peer} mtu {MTU} address {mac}\n"
                    f"link set {host_end} master {self.bridge(spec)}\n"
                    f"link set {host_end} up\n"
                    f"link set {peer} netns {target}\n"
                ),
            )  # fmt: skip
            await self.commands.run(
                "ip", "-batch", "-", netns=attachment.sandbox,
                stdin=(
                    f"link set {peer} name {interface}\n"
                    f"address add {address} dev {interface}\n"
                    f"link set {interface} up\n"
                    "link set lo up\n"
                ),
            )  # fmt: skip
            if spec.ingress:
                await self._shortcut(spec, host_end, str(address))
        except NetworkError as exc:
            await self.commands.run("ip", "link", "del", host_end, check=False)  # the pair goes
            raise NetworkError(
                f"overlay: cannot attach task {attachment.task_id} to network {spec.name}: {exc}"
            ) from None
        await announce(attachment.sandbox, interface, mac, str(address))

    async def _shortcut(self, spec: NetworkSpec, host_end: str, address: str) -> None:
        """Frames from other nodes reach the task without crossing the bridge (``shortcut``).
        The redirect is an optimisation: without it (no tc, a kernel without u32 or mirred)
        frames take the bridge as before, and the node says so once per endpoint."""
        await self.commands.run("bridge", "-batch", "-", stdin=bridge_port_script(host_end, address))
        vxlan = vxlan_name(self.digest, spec.vni)
        script = redirect_script(vxlan, host_end, address)
        if spec.network_id not in self.tunnelled or not script:
            return
        # -force: the first ``filter del`` fails when the address had no filter yet
        await self.commands.run("tc", "-force", "-batch", "-", stdin=script, check=False)
        if not await self._redirect_prefs(vxlan, host_end):
            log.warning(
                "overlay: no tc shortcut from %s to %s (tc with u32 and mirred missing?): frames "
                "for the task take the bridge", vxlan, host_end,
            )  # fmt: skip
            return
        await self._join_block(spec, vxlan, host_end, [a for a in (spec.host_address, address) if a])

    async def _join_block(
        self, spec: NetworkSpec, vxlan: str, device: str, local: list[str], side: str = "ingress"
    ) -> None:
        """``device`` joins the network's shared tc block (``shortcut.answers_script``), with a
        filter for each of the ``local`` addresses the block lacks; nothing for subnets too
        large for the block (``reverse_fits``)."""
        if not reverse_fits(spec.subnet):
            return
        listing = await self.commands.run("tc", "-j", "filter", "show", "block", str(spec.vni), check=False)
        script = answers_script(spec.vni, vxlan, device, local, block_prefs(listing), side=side)
        await self.commands.run("tc", "-batch", "-", stdin=script, check=False)

    async def _redirect_prefs(self, vxlan: str, host_end: str) -> list[int]:
        """The priorities of the filters on ``vxlan``'s ingress that redirect to ``host_end``."""
        listing = await self.commands.run("tc", "-j", "filter", "show", "dev", vxlan, "ingress", check=False)
        return prefs_redirecting_to(listing, host_end)

    async def detach(self, task_id: str, network_id: str) -> None:
        """Deleting the host end deletes the pair, wherever the other end is; the tunnel's
        shortcut to it goes first."""
        host_end = endpoint_name(self.digest, task_id, network_id)
        spec = self.networks.get(network_id)
        if spec is not None and spec.ingress and network_id in self.tunnelled:
            vxlan = vxlan_name(self.digest, spec.vni)
            for pref in await self._redirect_prefs(vxlan, host_end):
                # the tunnel's redirect to the task, and the task's MAC in the block of answers
                for where in (("dev", vxlan, "ingress"), ("block", str(spec.vni))):
                    await self.commands.run("tc", "filter", "del", *where, "pref", str(pref), check=False)
        await self.commands.run("ip", "link", "del", host_end, check=False)

    async def remove_network(self, network_id: str) -> NetworkSpec | None:
        spec = self.networks.pop(network_id, None)
        self.tunnelled.discard(network_id)
        if spec is not None:
            for name in (vxlan_name(self.digest, spec.vni), bridge_name(self.digest, spec.vni)):
                await self.commands.run("ip", "link", "del", name, check=False)
        return spec

    async def remove_all(self) -> None:
        """Delete every device of this node, found by name (endpoints first), made by this run
        or an earlier one."""
        order = {ENDPOINT: 0, PEER: 0, VXLAN: 1, BRIDGE: 2}
        ours = sorted((d for d in await self.links() if is_ours(d, self.digest)), key=lambda d: order[d[:3]])
        if ours:
            await self.commands.run(
                "ip", "-force", "-batch", "-", stdin="".join(f"link del {d}\n" for d in ours), check=False
            )
        self.networks.clear()
        self.tunnelled.clear()

    def _spec(self, network_id: str) -> NetworkSpec:
        spec = self.networks.get(network_id)
        if spec is None:
            raise NetworkError(
                f"overlay: network {network_id} does not exist on this node (create_network first)"
            )
        return spec
