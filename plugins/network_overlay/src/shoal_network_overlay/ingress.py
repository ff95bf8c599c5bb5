"""The node's own nftables table: the routing mesh (ingress DNAT), its masquerade, and the
filter that accepts VXLAN only from the swarm's nodes.

Everything lives in ``table ip shoal_<node digest>``; the host's other tables are never read or
written. A new connection to any local address of the node (127.0.0.1 included) on a published
port jumps, through a verdict map keyed by port, to that port's chain, which DNATs it to one of
the port's backends picked by ``numgen inc mod N``: connections spread evenly over the running
tasks, wherever they run (the backends are task addresses on the ingress overlay network). A
connection forwarded into the ingress network's bridge is masqueraded to the node's own
address there, so the task's replies come back through the node that accepted it.

The ingress bridge is routed in the node's own namespace (Swarm hides it in a sandbox), so
the table also filters what enters it: only connections the mesh DNATed, frames bridged
between the network's own endpoints (tasks here and, through VXLAN, on other nodes), and
replies of accepted connections. Anything else routed into the bridge (a plain container on
the node, a host process) is dropped: a task is reachable from off the network only on its
published ports, through the mesh.

Each ``publish`` replaces one port's chain and map entry in one ``nft -f`` transaction (atomic),
so a backend that leaves gets no new connection from the moment the call returns, while
conntrack keeps every established connection on the backend it was given. A port with no
backend has no entry: connections to it are refused like any closed port. Because ports are
separate chains, ``start`` adopts an earlier run's table as it is: a restarted daemon cuts
nothing, and re-publishing replaces each port in place.

nftables ``numgen`` DNAT rather than IPVS (Swarm's choice): this kernel has no IPVS, and DNAT in
prerouting keeps the data path in the kernel with no user-space copying.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass

from shoal.plugin import NetworkError

from shoal_network_overlay.commands import Commands

#: DNAT priority (``dstnat``) and SNAT priority (``srcnat``), written as numbers: ``output``
#: hooks refuse the names in nft 1.0.6.
DSTNAT_PRIORITY = -100
#: Before conntrack and NAT (``raw``): what arrives from the ingress bridge is checked as sent.
RAW_PRIORITY = -300
SRCNAT_PRIORITY = 100
PROTOCOLS = ("tcp", "udp")
VXLAN_PORT = 4789


@dataclass(frozen=True)
class Forward:
    """Connections to ``published``/``protocol`` on the node go to ``target`` on a backend."""

    protocol: str
    published: int
    target: int
    backends: tuple[str, ...]


def _port(port: object) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise NetworkError(f"ingress: port {port!r} is not a number from 1 to 65535")
    return port


def _protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise NetworkError(f"ingress: protocol {protocol!r} is not tcp or udp")
    return protocol


def _address(address: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        raise NetworkError(f"ingress: {what} {address!r} is not an IPv4 address") from None


def checked(forward: Forward) -> Forward:
    """Only values that cannot change the script's meaning reach nft (no injection)."""
    _protocol(forward.protocol)
    _port(forward.published)
    _port(forward.target)
    for address in forward.backends:
        _address(address, "backend address")
    return forward


def port_chain(protocol: str, published: int) -> str:
    return f"p_{protocol}_{published}"


def base_script(table: str, advertise_ip: str) -> str:
    """Create the table if missing (adopting an earlier run's ports) and (re)write its base
    chains' rules in one transaction."""
    advertise = _address(advertise_ip, "advertise address")
    dispatch = "".join(
        f"add rule ip {table} {{hook}} fib daddr type local {p} dport vmap @{p}_ports\n" for p in PROTOCOLS
    )
    return (
        f"table ip {table} {{\n"
        "  set peers { type ipv4_addr; }\n"
        "  map tcp_ports { type inet_service : verdict; }\n"
        "  map udp_ports { type inet_service : verdict; }\n"
        f"  chain prerouting {{ type nat hook prerouting priority {DSTNAT_PRIORITY}; policy accept; }}\n"
        f"  chain output {{ type nat hook output priority {DSTNAT_PRIORITY}; policy accept; }}\n"
        f"  chain postrouting {{ type nat hook postrouting priority {SRCNAT_PRIORITY}; policy accept; }}\n"
        "  chain input { type filter hook input priority 0; policy accept; }\n"
        "  chain forward { type filter hook forward priority 0; policy accept; }\n"
        "  chain outbound { type filter hook output priority 0; policy accept; }\n"
        f"  chain guard {{ type filter hook prerouting priority {RAW_PRIORITY}; policy accept; }}\n"
        "  chain from_bridge { }\n"
        f"  chain untracked_out {{ type filter hook output priority {RAW_PRIORITY}; policy accept; }}\n"
        "}\n"
        f"flush chain ip {table} prerouting\n"
        f"flush chain ip {table} output\n"
        f"flush chain ip {table} input\n"
        f"flush chain ip {table} guard\n"
        f"flush chain ip {table} untracked_out\n"
        + dispatch.format(hook="prerouting")
        + dispatch.format(hook="output")
        + f"add rule ip {table} input ip daddr {advertise} udp dport {VXLAN_PORT} ip saddr != @peers drop\n"
        # The tunnel's own packets need no connection tracking (nothing NATs or matches their
        # state; the peer filter above looks at addresses only). Tracked, every connection
        # crossing nodes cost each node two UDP entries (the outer source port is a hash of the
        # inner flow, so each direction is a new "connection"): created, looked up on every
        # packet and expired 30 s later, for nothing.
        + f"add rule ip {table} guard ip daddr {advertise} udp dport {VXLAN_PORT} notrack\n"
        + f"add rule ip {table} untracked_out ip saddr {advertise} udp dport {VXLAN_PORT} notrack\n"
        # What arrives from the ingress bridge (``set_ingress_bridge`` writes that chain): one
        # base chain per hook, since each is a separate call for every packet of the node.
        + f"add rule ip {table} guard jump from_bridge\n"
    )


def publish_script(table: str, forward: Forward) -> str:
    """Replace one port's chain and map entry; with no backend, remove both (port closed)."""
    checked(forward)
    chain = port_chain(forward.protocol, forward.published)
    key = f"{forward.protocol}_ports {{ {forward.published} : jump {chain} }}"
    script = f"add chain ip {table} {chain}\nflush chain ip {table} {chain}\nadd element ip {table} {key}\n"
    if not forward.backends:
        # add-then-delete: correct whether or not the port was published before
        return script + (
            f"delete element ip {table} {forward.protocol}_ports {{ {forward.published} }}\n"
            f"delete chain ip {table} {chain}\n"
        )
    choices = ", ".join(f"{i} : {address}" for i, address in enumerate(forward.backends))
    return script + (
        f"add rule ip {table} {chain} {forward.protocol} dport {forward.published} "
        f"dnat to numgen inc mod {len(forward.backends)} map {{ {choices} }} : {forward.target}\n"
    )


def into_bridge_rules(table: str, chain: str, bridge: str, *, bridged: bool) -> str:
    """What may enter the ingress ``bridge`` through ``chain`` (forwarded, or sent by the node
    itself): a connection the mesh DNATed (published port to its target), replies of an
    accepted connection, and (``bridged``: br_netfilter shows bridged frames to ``forward``
    with the bridge as both devices) traffic between the network's own endpoints; the rest is
    dropped, so neither a local container nor a host process reaches a task's unpublished
    ports through its ingress address."""
    rule = f"add rule ip {table} {chain}"
    return (
        f'{rule} oifname != "{bridge}" return\n'  # other traffic: one comparison, not four
        f"{rule} ct state established,related accept\n"
        f"{rule} ct status dnat accept\n"
        + (f'{rule} iifname "{bridge}" accept\n' if bridged else "")
        + f"{rule} drop\n"
    )


def untracked_within(table: str, host_address: str | None) -> str:
    """The ``from_bridge`` rule that leaves frames bridged within the network untracked (see
    ``NodeTable.set_ingress_bridge``); none without the node's address on it."""
    if not host_address:
        return ""
    try:
        own = ipaddress.IPv4Interface(host_address)
    except ValueError:
        raise NetworkError(f"ingress: host address {host_address!r} is not an IPv4 CIDR") from None
    return f"add rule ip {table} from_bridge ip daddr {own.network} ip daddr != {own.ip} notrack\n"


class NodeTable:
    """This node's table (see the module docstring); ``commands`` runs ``nft`` in the node's
    namespace."""

    def __init__(self, commands: Commands, table: str) -> None:
        self.commands = commands
        self.table = table

    async def exists(self) -> bool:
        out = await self.commands.run("nft", "-j", "list", "tables", "ip")
        tables = json.loads(out).get("nftables", []) if out.strip() else []
        return any(item.get("table", {}).get("name") == self.table for item in tables)

    async def ensure(self, advertise_ip: str) -> None:
        await self._nft(base_script(self.table, advertise_ip))

    async def set_peers(self, peer_ips: Sequence[str]) -> None:
        """Only these addresses may send VXLAN to the node (a forged frame from elsewhere on the
        underlay is dropped before it reaches any overlay network)."""
        peers = [_address(peer, "peer address") for peer in peer_ips]
        script = f"flush set ip {self.table} peers\n"
        if peers:
            script += f"add element ip {self.table} peers {{ {', '.join(peers)} }}\n"
        await self._nft(script)

    async def set_ingress_bridge(self, bridge: str | None, host_address: str | None = None) -> None:
        """Masquerade DNATed connections leaving into ``bridge`` (the ingress network's), and
        guard the node's loopback: ``route_localnet`` on that bridge (for ``127.0.0.1:PORT``)
        would otherwise let a task on the ingress network, or any node's VXLAN, reach services
        the node binds to 127.0.0.1 (Kubernetes' CVE-2020-8558). Packets from the bridge with a
        loopback source or destination are dropped before conntrack, so the legitimate replies
        (addressed to the node's ingress address until conntrack rewrites them) pass.

        ``host_address`` (the node's address on the network, CIDR): frames the bridge passes
        between its ports, between a local task and another node's tunnel, are addressed to
        another address of the network, and nothing here NATs them or needs their state (the
        ``forward`` filter accepts them as bridged): they are not tracked. Tracked, each
        connection a node forwards to a task on another node cost that node a second entry
        (created, looked up on every packet, expired two minutes later). Packets to the node's
        own address (replies of the connections it forwarded, to be un-NATed) stay tracked."""
        script = "".join(
            f"flush chain ip {self.table} {chain}\n"
            for chain in ("postrouting", "from_bridge", "forward", "outbound")
        )
        if bridge:
            script += (
                f'add rule ip {self.table} postrouting oifname "{bridge}" ct status dnat masquerade\n'
                f'add rule ip {self.table} from_bridge iifname != "{bridge}" return\n'
                f"add rule ip {self.table} from_bridge ip daddr 127.0.0.0/8 drop\n"
                f"add rule ip {self.table} from_bridge ip saddr 127.0.0.0/8 drop\n"
                + untracked_within(self.table, host_address)
                + into_bridge_rules(self.table, "forward", bridge, bridged=True)
                + into_bridge_rules(self.table, "outbound", bridge, bridged=False)
            )
        await self._nft(script)

    async def publish(self, forward: Forward) -> None:
        await self._nft(publish_script(self.table, forward))

    async def unpublish(self, protocol: str, published: int) -> None:
        await self._nft(publish_script(self.table, Forward(_protocol(protocol), _port(published), 1, ())))

    async def ports(self) -> list[tuple[str, int]]:
        """The published ports in the table now (adopted from an earlier run included)."""
        out = await self.commands.run("nft", "-j", "list", "table", "ip", self.table, check=False)
        items = json.loads(out).get("nftables", []) if out.strip() else []
        found = []
        for item in items:
            name = item.get("chain", {}).get("name", "")
            parts = name.split("_")
            if len(parts) == 3 and parts[0] == "p" and parts[1] in PROTOCOLS and parts[2].isdigit():
                found.append((parts[1], int(parts[2])))
        return sorted(found)

    async def remove(self) -> None:
        """Delete the table (missing is fine)."""
        await self._nft(f"table ip {self.table}\ndelete table ip {self.table}\n")

    async def _nft(self, script: str) -> None:
        try:
            await self.commands.run("nft", "-f", "-", stdin=script)
        except NetworkError as exc:
            raise NetworkError(f"ingress: nft refused the ruleset: {exc}") from None
