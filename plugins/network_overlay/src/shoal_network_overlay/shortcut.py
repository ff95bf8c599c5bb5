"""The ingress network's shortcuts past its bridge: frames between the tunnel and local tasks,
and the answers the tunnel brings for the node itself.

On a node that runs dockerd, ``net.bridge.bridge-nf-call-iptables`` is 1 for the whole
namespace, and it cannot be turned off for one bridge (the per-bridge option only adds to it):
every frame the ingress bridge passes between the VXLAN device and a local task goes through
the IP rules' prerouting, forward and postrouting hooks (br_netfilter), on top of the bridge's
own work, although the node's table only lets those frames through untracked. On the routing
mesh's path through a node without the task, that was every packet of every connection on the
task's node (bench/mesh.py: about a tenth of the network stack's CPU per request on that path,
docs/benchmarks.md).

So a tc filter on the network's VXLAN device (ingress, ``u32`` on the destination MAC, which
is derived from the task's address: ``arp.mac_for``) hands each frame for a local task straight
to the task's veth (``mirred egress redirect``): decapsulated, then delivered, nothing between.
Broadcast and multicast (ARP requests), frames for the node itself and for MACs that are not a
local task's still go through the bridge as before. The VXLAN device learns which node holds
each remote address in its own receive path, before tc, so nothing is lost there.

The bridge no longer sees those frames, so it cannot learn the remote senders from them. What
it does not know it floods, and a flood must not reach the other local tasks (it would show
them traffic that is not theirs): each task's port gets a static FDB entry for the task's MAC
(the bridge always knows its local tasks, even after the learned entries age out) and takes no
flooded unknown unicast (``flood off``): an unknown destination is a remote one, and goes to the
VXLAN device only, whose own table sends it to the right node. Broadcasts still reach every
port.

The filter's priority is the task's host number in the network's subnet, so an address's
filter is replaced in place when a task reuses it; a detached endpoint's filter is found by the
device it redirects to (also after a restart) and deleted. Filters and FDB entries go with their
devices when the network is removed.

**The other direction** (``answers_script``): a task's answers to another node (for the routing
mesh, to the masquerading node's address on the network) crossed the bridge too, with the same
three br_netfilter passes. The host ends of the network's local task veths share one tc block
(``ingress_block``, numbered by the VXLAN ID: one tunnelled network per ID in a namespace), whose
filters, in priority order: a frame for a local MAC (the node's own address on the network, every
local task's: priority = host number, no action, so the frame goes on into the bridge as before)
continues; any other unicast frame goes straight to the VXLAN device (``mirred egress redirect``),
which sends it to the node its table holds the MAC behind, or, for a MAC it does not know, to
every node, as the bridge did by flooding it to the tunnel's port (the receiving bridges give
unknown unicast to no task: ``flood off``). Broadcast and multicast (ARP) are not matched: they
go through the bridge to every port. Only networks whose host numbers all fit below the
catch-all's priority get it (``reverse_fits``: /16 and smaller). The block goes with the last
device in it (the bridge, below).

**Answers for the node itself** (``to_node_script``): on the node that accepted a mesh
connection (and masqueraded it to its address on the network), the task's answers arrive from
the tunnel for the bridge's own MAC and crossed the bridge's receive path and one br_netfilter
prerouting pass before the IP stack un-NATed them. A filter on the VXLAN device's ingress for
that MAC hands them to the bridge device's own receive path (``mirred ingress redirect``): the IP
stack takes them as received on the bridge, so every IP hook (the loopback guard in ``guard``,
conntrack's un-NAT, ``input``/``forward``) sees them with the bridge as their input device, as
before, and only the bridge's port work and br_netfilter's copy of those hooks are skipped. The
VXLAN device carries the bridge's MAC (``create_network``): the IP stack drops a frame that
was not addressed to the device it arrives on, and tc cannot rewrite that verdict on this
kernel (no ``skbedit``).

**What the node itself sends into the network** (a connection it DNATed to a task on another
node) would otherwise go through the bridge device's transmit path and forwarding to its tunnel
port: the bridge's egress joins the same block (``side="egress"``), so a frame for a local MAC
goes on into the bridge and any other unicast frame straight to the VXLAN device. The block then
lives as long as the network's bridge, tasks or not.
"""

from __future__ import annotations

import ipaddress
import json

from shoal_network_overlay.arp import mac_for

#: tc priorities are 16 bits (0 means "choose one"): host numbers above that have no shortcut.
MAX_PREF = 0xFFFF
#: The block's catch-all (every other unicast frame to the tunnel) comes last.
TO_TUNNEL_PREF = MAX_PREF


def pref_for(address: str) -> int | None:
    """The filter priority of the task at ``address`` (CIDR): its host number in the subnet."""
    interface = ipaddress.IPv4Interface(address)
    host = int(interface.ip) - int(interface.network.network_address)
    return host if 1 <= host <= MAX_PREF else None


def bridge_port_script(host_end: str, address: str) -> str:
    """``bridge -batch``: the task's port knows its MAC for good and takes no unknown unicast."""
    return f"fdb replace {mac_for(address)} dev {host_end} master static\nlink set dev {host_end} flood off\n"


def redirect_script(vxlan: str, host_end: str, address: str) -> str:
    """``tc -force -batch``: frames from the tunnel for the task at ``address`` go to its veth
    (an earlier filter for the same address, a previous task's, is replaced)."""
    pref = pref_for(address)
    if pref is None:
        return ""
    return (
        f"qdisc replace dev {vxlan} clsact\n"
        f"filter del dev {vxlan} ingress pref {pref}\n"
        f"filter add dev {vxlan} ingress pref {pref} protocol all u32 match ether dst {mac_for(address)} "
        f"action mirred egress redirect dev {host_end}\n"
    )


def prefs_redirecting_to(listing: str, host_end: str) -> list[int]:
    """The priorities of the filters in ``tc -j filter show`` output that redirect to
    ``host_end``."""
    found = set()
    for item in json.loads(listing or "[]"):
        actions = item.get("options", {}).get("actions", [])
        if any(action.get("to_dev") == host_end for action in actions):
            found.add(int(item["pref"]))
    return sorted(found)


def reverse_fits(subnet: str) -> bool:
    """Every host number of ``subnet`` sorts before the catch-all (``TO_TUNNEL_PREF``), so each
    local MAC can be given its own filter ahead of it."""
    return ipaddress.IPv4Network(subnet).num_addresses <= TO_TUNNEL_PREF + 1


def answers_script(
    block: int,
    vxlan: str,
    device: str,
    local_addresses: list[str],
    present: set[int],
    *,
    side: str = "ingress",
) -> str:
    """``tc -batch``: ``device`` joins the network's block on its ``side`` (a task's veth: what
    the task sends, its ingress; the bridge: what the node sends into it, its egress); the filters
    the block lacks (``present``: the priorities it has) are added, the local MACs' before the
    catch-all, so no frame for a local MAC is ever sent to the tunnel. ``local_addresses``: the
    node's own address on the network and the task's (CIDR)."""
    script = f"qdisc replace dev {device} {side}_block {block} clsact\n"
    for address in local_addresses:
        pref = pref_for(address)
        if pref is not None and pref not in present:
            present.add(pref)
            script += (
                f"filter add block {block} pref {pref} protocol all u32 match ether dst {mac_for(address)} "
                "classid 1:1\n"
            )
    if TO_TUNNEL_PREF not in present:
        # the destination MAC's lowest bit (at -14 from the IP header) is 0: unicast
        script += (
            f"filter add block {block} pref {TO_TUNNEL_PREF} protocol all u32 match u8 0 1 at -14 "
            f"action mirred egress redirect dev {vxlan}\n"
        )
    return script


def block_prefs(listing: str) -> set[int]:
    """The priorities of the filters in ``tc -j filter show block N`` output."""
    return {int(item["pref"]) for item in json.loads(listing or "[]")}


def to_node_script(vxlan: str, bridge: str, host_address: str) -> str:
    """``tc -force -batch``: frames from the tunnel for the node's own address on the network
    (``host_address``, CIDR) go up the bridge device's receive path, not through its ports."""
    pref = pref_for(host_address)
    if pref is None:
        return ""
    return (
        f"qdisc replace dev {vxlan} clsact\n"
        f"filter del dev {vxlan} ingress pref {pref}\n"
        f"filter add dev {vxlan} ingress pref {pref} protocol all u32 match ether dst {mac_for(host_address)} "
        f"action mirred ingress redirect dev {bridge}\n"
    )
