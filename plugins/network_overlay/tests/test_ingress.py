"""The routing mesh on real kernel networking: three hosts (namespaces on one LAN), the ingress
overlay network between them, two task namespaces as backends, a client on the LAN."""

from __future__ import annotations

import json
import sys
from collections import Counter

from shoal.plugin import Backend, EndpointAttachment, NetworkSpec, NodeNetwork, PublishedPort
from shoal_network_overlay import OverlayNetwork
from shoal_network_overlay.arp import mac_for
from shoal_network_overlay.names import bridge_name, node_digest
from shoal_network_overlay.testing import HOSTS, Lab, ip

CONTAINERS = 3
INGRESS = NetworkSpec("ingressid", "ingress", "10.0.0.0/24", "10.0.0.1", 4096, ingress=True)
HOST_ADDRESSES = {"h1": "10.0.0.2/24", "h2": "10.0.0.3/24", "h3": "10.0.0.4/24"}
TASKS = {"c1": ("h1", "10.0.0.10"), "c2": ("h2", "10.0.0.11")}
PORT = PublishedPort("websvc", "tcp", 8080, 80)
BACKENDS = [Backend(f"task-{c}", address) for c, (_, address) in TASKS.items()]


async def start_node(lab: Lab, host: str) -> OverlayNetwork:
    node = OverlayNetwork(netns=lab.path(host))
    await node.start(NodeNetwork(f"node-{host}", HOSTS[host]))
    await node.set_peers([ip for h, ip in HOSTS.items() if h != host])
    spec = NetworkSpec(**{**INGRESS.__dict__, "host_address": HOST_ADDRESSES[host]})
    await node.create_network(spec)
    return node


async def nodes_with_tasks(lab: Lab) -> dict[str, OverlayNetwork]:
    """A node on each host, and the tasks of ``TASKS`` attached and serving their name on 80."""
    nodes = {host: await start_node(lab, host) for host in HOSTS}
    for container, (host, address) in TASKS.items():
        await nodes[host].attach(
            EndpointAttachment(
                f"task-{container}", INGRESS.network_id, f"{address}/24", (), lab.path(container)
            )
        )
        lab.serve(container, container, 80)
    return nodes


async def test_published_port_answers_on_every_host_spreads_follows_changes_and_leaves_nothing(
    lab: Lab,
) -> None:
    # h3 runs dockerd's firewall: FORWARD drops, DOCKER-USER is the hook for other software
    for rule in (["-N", "DOCKER-USER"], ["-P", "FORWARD", "DROP"], ["-I", "FORWARD", "-j", "DOCKER-USER"]):
        await lab.sh("h3", "iptables", "-w", *rule)
    before = lab.snapshot("h1", "h2", "h3")
    nodes = {host: await start_node(lab, host) for host in HOSTS}
    # every node is given the ingress network, but makes nothing before its first use
    assert lab.snapshot("h1", "h2", "h3") == before
    for container, (host, address) in TASKS.items():
        await nodes[host].attach(
            EndpointAttachment(
                f"task-{container}", INGRESS.network_id, f"{address}/24", (), lab.path(container)
            )
        )
        lab.serve(container, container, 80)
    for node in nodes.values():
        await node.publish(PORT, BACKENDS)

    # every host answers, a host with no task (h3, behind dockerd's firewall) too, from the LAN
    for host in HOSTS:
        answers = await lab.requests("lan", HOSTS[host], 8080, 10)
        assert Counter(answers) == {"c1": 5, "c2": 5}, (host, answers)
    # on a host itself, through 127.0.0.1 (route_localnet on the ingress bridge) and its address
    assert sorted(set(await lab.requests("h3", "127.0.0.1", 8080, 4))) == ["c1", "c2"]
    assert sorted(set(await lab.requests("h3", HOSTS["h3"], 8080, 4))) == ["c1", "c2"]
    # (the tasks have no default route: their answers to the LAN client come back only because
    # the forwarding node masqueraded the connection to its own ingress address)

    # c1 leaves: from the moment publish returns, no new connection goes to it
    await nodes["h3"].publish(PORT, BACKENDS[1:])
    assert await lab.requests("lan", HOSTS["h3"], 8080, 6) == ["c2"] * 6
    # no backend: the port is closed on that host (refused, not hanging)
    await nodes["h3"].publish(PORT, [])
    assert await lab.requests("lan", HOSTS["h3"], 8080, 2) == ["", ""]

    # a restarted daemon adopts the data path: h1's port keeps answering before any new call
    await nodes["h1"].close()
    nodes["h1"] = OverlayNetwork(netns=lab.path("h1"))
    await nodes["h1"].start(NodeNetwork("node-h1", HOSTS["h1"]))
    assert Counter(await lab.requests("lan", HOSTS["h1"], 8080, 4)) == {"c1": 2, "c2": 2}
    await nodes["h1"].unpublish("tcp", 8080)
    await nodes["h1"].unpublish("tcp", 8080)  # missing is fine
    assert await lab.requests("lan", HOSTS["h1"], 8080, 1) == [""]

    for node in nodes.values():
        await node.cleanup()
        await node.close()
    assert lab.snapshot("h1", "h2", "h3") == before  # devices, tables and DOCKER-USER rules gone


#: Prints every datagram it gets on 127.0.0.1:7777, a line each.
LOOPBACK_LISTENER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 7777))
print("ready", flush=True)
while True:
    print(s.recv(100).decode(), flush=True)
"""
SEND = """
import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[1].encode(), ("127.0.0.1", 7777))
"""


async def test_a_task_on_the_ingress_network_cannot_reach_the_nodes_loopback(lab: Lab) -> None:
    """route_localnet on the ingress bridge (for curl 127.0.0.1:PORT) must not let a task send
    to services the node binds to 127.0.0.1 (CVE-2020-8558 in Kubernetes)."""
    node = await start_node(lab, "h1")
    await node.attach(EndpointAttachment("task-c1", INGRESS.network_id, "10.0.0.10/24", (), lab.path("c1")))
    listener = lab.serve_script("h1", LOOPBACK_LISTENER)
    # a hostile task routes 127.0.0.1 to its node's ingress address, past its own loopback
    for command in (
        ["ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"],
        ["ip", "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local"],
        ["ip", "route", "add", "127.0.0.1/32", "via", HOST_ADDRESSES["h1"].split("/")[0]],
    ):
        await lab.sh("c1", *command)
    await lab.sh("c1", sys.executable, "-c", SEND, "from-the-task")
    await lab.sh(
        "c1", "busybox", "ping", "-c", "1", "-W", "2", HOST_ADDRESSES["h1"].split("/")[0]
    )  # same path
    await lab.sh("h1", sys.executable, "-c", SEND, "from-the-node")
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == b"from-the-node"  # the task's datagram never arrived
    await node.cleanup()


#: A plain container's bridge on h1 (like docker0): h1 172.31.0.1, the container c3 172.31.0.2.
PLAIN_BRIDGE = ("172.31.0.1", "172.31.0.2")
UNPUBLISHED = 9090


async def test_off_the_ingress_network_a_task_answers_only_on_its_published_port_through_the_mesh(
    lab: Lab,
) -> None:
    """Issue 14: the ingress bridge is routed in the node's namespace, so a plain container on
    the node (not on the ingress network) and the node's own processes must not reach a task's
    ports through its ingress address; only the mesh's DNATed connections enter the bridge."""
    nodes = await nodes_with_tasks(lab)
    for container, (host, _) in TASKS.items():
        lab.serve(container, f"{container}-private", UNPUBLISHED)
        # a reply path through the node, as a real task has (docker_gwbridge's default route)
        await lab.sh(container, "ip", "route", "add", "default", "via", HOST_ADDRESSES[host].split("/")[0])
    for node in nodes.values():
        await node.publish(PORT, BACKENDS)
    gateway, plain = PLAIN_BRIDGE
    ip(
        "link",
        "add",
        f"pc{lab.tag}",
        "netns",
        lab.names["h1"],
        "type",
        "veth",
        "peer",
        "eth0",
        "netns",
        lab.names["c3"],
    )
    await lab.sh("h1", "ip", "addr", "add", f"{gateway}/24", "dev", f"pc{lab.tag}")
    await lab.sh("h1", "ip", "link", "set", f"pc{lab.tag}", "up")
    await lab.sh("c3", "ip", "addr", "add", f"{plain}/24", "dev", "eth0")
    await lab.sh("c3", "ip", "link", "set", "eth0", "up")
    await lab.sh("c3", "ip", "route", "add", "default", "via", gateway)
    local_task = TASKS["c1"][1]

    # the plain container and the node itself: the unpublished port and the target port
    # through the task's ingress address are closed to them
    for role in ("c3", "h1"):
        for port in (UNPUBLISHED, 80):
            assert await lab.requests(role, local_task, port, 1) == [""], (role, port)
    # the mesh still works: from the plain container through its node's address, from the LAN
    # to a host with the task (h1) and one without (h3), and through 127.0.0.1 on both
    assert sorted(set(await lab.requests("c3", HOSTS["h1"], 8080, 4))) == ["c1", "c2"]
    for host in ("h1", "h3"):
        assert sorted(set(await lab.requests("lan", HOSTS[host], 8080, 4))) == ["c1", "c2"], host
        assert sorted(set(await lab.requests(host, "127.0.0.1", 8080, 4))) == ["c1", "c2"], host
    # tasks on the ingress network still reach each other (bridged, across nodes through VXLAN)
    assert await lab.requests("c2", local_task, UNPUBLISHED, 1) == ["c1-private"]

    for node in nodes.values():
        await node.cleanup()
        await node.close()


def tracked(entries: str, needle: str) -> list[str]:
    """The conntrack entries (lines of /proc/net/nf_conntrack) that contain ``needle``'s
    fields whole and in a row: ``dport=4789`` is the tunnel's port, not a client's ephemeral
    port 47894 (``dport=47894``, which a substring test took for it once in CI)."""
    wanted = f" {' '.join(needle.split())} "
    return [line for line in entries.splitlines() if wanted in f" {' '.join(line.split())} "]


async def test_nodes_track_only_the_connections_they_nat(lab: Lab) -> None:
    """The mesh's cost per connection (bench/mesh.py): a node keeps conntrack state for the
    connections it DNATs, never for the tunnel's UDP packets (each direction of each crossing
    connection was a new entry on both nodes) nor for frames its ingress bridge passes between
    another node's tunnel and a local task (an entry per connection on the task's node)."""
    # the task's node runs dockerd's firewall: untracked bridged frames must still pass FORWARD
    for rule in (["-N", "DOCKER-USER"], ["-P", "FORWARD", "DROP"], ["-I", "FORWARD", "-j", "DOCKER-USER"]):
        await lab.sh("h1", "iptables", "-w", *rule)
    nodes = {host: await start_node(lab, host) for host in HOSTS}
    await nodes["h1"].attach(
        EndpointAttachment("task-c1", INGRESS.network_id, "10.0.0.10/24", (), lab.path("c1"))
    )
    lab.serve("c1", "c1", 80)
    for node in nodes.values():
        await node.publish(PORT, BACKENDS[:1])
    assert await lab.requests("lan", HOSTS["h3"], 8080, 4) == ["c1"] * 4  # over VXLAN to h1
    assert await lab.requests("lan", HOSTS["h1"], 8080, 2) == ["c1"] * 2
    h1, h3 = [await lab.sh(host, "cat", "/proc/net/nf_conntrack") for host in ("h1", "h3")]
    assert len(tracked(h3, "dport=8080")) == 4  # h3 DNATed (and masqueraded) these: tracked
    assert len(tracked(h1, "dport=8080")) == 2  # the ones h1 DNATed itself
    assert tracked(h1 + h3, "dport=4789") == []
    h3_ingress = HOST_ADDRESSES["h3"].split("/")[0]
    assert tracked(h1, f"src={h3_ingress} dst=10.0.0.10 ") == []  # h3's, bridged on h1 to c1
    for node in nodes.values():
        await node.cleanup()


#: Counts the frames for one MAC that enter the bridge from one of its ports (the tunnel's or
#: a task's): bridge-family prerouting sees every frame the bridge receives on a port.
BRIDGE_PROBE = """table bridge shoalprobe {{
  counter to_task {{ }}
  chain pre {{ type filter hook prerouting priority -500; policy accept; ether daddr {mac} counter name to_task; }}
}}
"""


async def test_frames_from_other_nodes_reach_a_local_task_without_crossing_the_bridge(lab: Lab) -> None:
    """The mesh's cost through a node without the task (bench/mesh.py): on the task's node,
    frames from the tunnel for the task go straight to its veth, not through the ingress bridge
    and its netfilter pass (br_netfilter); the node's own connections to the task, the task's
    answers through the bridge, and tasks on other nodes still reach it."""
    nodes = await nodes_with_tasks(lab)
    for node in nodes.values():
        await node.publish(PORT, BACKENDS[:1])
    probe = BRIDGE_PROBE.format(mac=mac_for(TASKS["c1"][1]))
    await lab.sh("h1", "sh", "-c", f"printf '%s' '{probe}' | nft -f -")
    assert await lab.requests("lan", HOSTS["h3"], 8080, 6) == ["c1"] * 6  # over VXLAN to h1
    assert await lab.requests("lan", HOSTS["h1"], 8080, 2) == ["c1"] * 2  # h1's bridge to c1
    assert await lab.requests("c2", TASKS["c1"][1], 80, 2) == ["c1"] * 2  # a task on h2, bridged
    counter = await lab.sh("h1", "nft", "-j", "list", "counter", "bridge", "shoalprobe", "to_task")
    assert json.loads(counter)["nftables"][1]["counter"]["packets"] == 0
    await lab.sh("h1", "nft", "delete", "table", "bridge", "shoalprobe")
    for node in nodes.values():
        await node.cleanup()
        await node.close()


#: Prints the destination MAC of every frame of EtherType 0x88b5 (IEEE local experimental) that
#: reaches the namespace's eth0, a line each.
FRAME_LISTENER = """
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5)); s.bind(("eth0", 0))
print("ready", flush=True)
while True:
    print(s.recv(64)[:6].hex(":"), flush=True)
"""
#: Sends one 0x88b5 frame from eth0 to each MAC of argv, in order.
FRAME_SENDER = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
source = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
for mac in sys.argv[1:]:
    s.send(bytes.fromhex(mac.replace(":", "")) + source + bytes.fromhex("88b5") + bytes(46))
"""
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


async def test_a_local_tasks_frames_for_other_nodes_go_to_the_tunnel_without_crossing_the_bridge(
    lab: Lab,
) -> None:
    """The mesh's cost through a node without the task (bench/mesh.py), the other direction: the
    task's answers to the node that masqueraded the connection (h3's address on the network) go
    from its veth straight to the VXLAN device, not through h1's bridge and br_netfilter. Frames
    for the node's own address and for other local tasks still cross the bridge; unicast for no
    known task reaches no other task; broadcast reaches every task; nothing is left behind."""
    nodes = await nodes_with_tasks(lab)  # c1 on h1, c2 on h2
    third = "10.0.0.12"  # c3: a second task on h1
    await nodes["h1"].attach(
        EndpointAttachment("task-c3", INGRESS.network_id, f"{third}/24", (), lab.path("c3"))
    )
    lab.serve("c3", "c3", 80)
    for node in nodes.values():
        await node.publish(PORT, BACKENDS[:1])
    probe = BRIDGE_PROBE.format(mac=mac_for(HOST_ADDRESSES["h3"]))
    await lab.sh("h1", "sh", "-c", f"printf '%s' '{probe}' | nft -f -")
    assert await lab.requests("lan", HOSTS["h3"], 8080, 6) == ["c1"] * 6  # c1 answers h3's address
    counter = await lab.sh("h1", "nft", "-j", "list", "counter", "bridge", "shoalprobe", "to_task")
    assert json.loads(counter)["nftables"][1]["counter"]["packets"] == 0
    await lab.sh("h1", "nft", "delete", "table", "bridge", "shoalprobe")
    # what still crosses the bridge (the node's own address, a local task) and a task elsewhere
    assert await lab.requests("lan", HOSTS["h1"], 8080, 2) == ["c1"] * 2
    assert await lab.requests("c3", TASKS["c1"][1], 80, 2) == ["c1"] * 2
    assert await lab.requests("c1", third, 80, 2) == ["c3"] * 2
    assert await lab.requests("c1", TASKS["c2"][1], 80, 2) == ["c2"] * 2
    assert await lab.requests("c2", TASKS["c1"][1], 80, 2) == ["c1"] * 2
    # unicast for a MAC no task has (the tunnel sends it to every node): no task sees it, here
    # (c3) or on another node (c2); the broadcast after it reaches both
    listeners = [lab.serve_script(task, FRAME_LISTENER) for task in ("c2", "c3")]
    nowhere = mac_for("10.0.0.99/24")
    await lab.sh("c1", sys.executable, "-c", FRAME_SENDER, nowhere, nowhere, BROADCAST_MAC)
    for listener in listeners:
        assert listener.stdout is not None
        assert listener.stdout.readline().decode().strip() == BROADCAST_MAC
    for node in nodes.values():
        await node.cleanup()
        await node.close()
    _, missing = await lab.sh_both("h1", "tc", "filter", "show", "block", str(INGRESS.vni), check=False)
    assert "Cannot find block" in missing  # the block went with the last task's veth


async def test_the_node_without_the_task_exchanges_frames_with_the_tunnel_without_crossing_its_bridge(
    lab: Lab,
) -> None:
    """The mesh's cost through a node without the task (bench/mesh.py), on that node: what h3
    forwards to the task on h1 goes from the bridge device straight to the tunnel, not through
    the bridge's forwarding; the task's answers arrive from the tunnel for h3's own address on
    the network and go up the bridge device's receive path, not through its ports and
    br_netfilter. Conntrack still un-NATs them, and the IP hooks still see the bridge as their
    input device, so the loopback guard still stops a task on another node from reaching h3's
    127.0.0.1 through the tunnel."""
    nodes = await nodes_with_tasks(lab)
    for node in nodes.values():
        await node.publish(PORT, BACKENDS[:1])
    h3_address = HOST_ADDRESSES["h3"].split("/")[0]
    probe = BRIDGE_PROBE.format(mac=mac_for(HOST_ADDRESSES["h3"]))
    await lab.sh("h3", "sh", "-c", f"printf '%s' '{probe}' | nft -f -")
    sent = BRIDGE_PROBE.format(mac=mac_for(TASKS["c1"][1])).replace("shoalprobe", "shoalsent")
    await lab.sh("h3", "sh", "-c", f"printf '%s' '{sent.replace('prerouting', 'output')}' | nft -f -")
    assert await lab.requests("lan", HOSTS["h3"], 8080, 6) == ["c1"] * 6  # answered through h3
    for table in ("shoalprobe", "shoalsent"):  # into h3's bridge from the tunnel, from h3 itself
        counter = await lab.sh("h3", "nft", "-j", "list", "counter", "bridge", table, "to_task")
        assert json.loads(counter)["nftables"][1]["counter"]["packets"] == 0, table
    assert await lab.requests("c1", h3_address, 8080, 2) == ["c1"] * 2  # h3's mesh, from a task
    listener = lab.serve_script("h3", LOOPBACK_LISTENER)
    # a hostile task on h1 routes 127.0.0.1 to h3's address on the network, over the tunnel
    for command in (
        ["ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"],
        ["ip", "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local"],
        ["ip", "route", "add", "127.0.0.1/32", "via", h3_address],
    ):
        await lab.sh("c1", *command)
    await lab.sh("c1", sys.executable, "-c", SEND, "from-a-task-on-h1")
    await lab.sh("c1", "busybox", "ping", "-c", "1", "-W", "2", h3_address)  # the same path
    await lab.sh("h3", sys.executable, "-c", SEND, "from-the-node")
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == b"from-the-node"  # the task's datagram never arrived
    for node in nodes.values():
        await node.cleanup()
        await node.close()


async def test_the_ingress_bridge_keeps_the_mac_of_the_nodes_address_as_tasks_come_and_go(lab: Lab) -> None:
    """A bridge takes the lowest MAC of its ports unless given one: the node's ingress address
    would change MAC as tasks attach and leave, and its neighbours would lose frames."""
    node = await start_node(lab, "h1")  # the bridge is made with the first task
    bridge = bridge_name(node_digest("node-h1"), INGRESS.vni)
    expected = mac_for(HOST_ADDRESSES["h1"])

    async def bridge_mac() -> str:
        return str(json.loads(await lab.sh("h1", "ip", "-j", "link", "show", "dev", bridge))[0]["address"])

    for container, (_, address) in TASKS.items():  # both on h1 here: two ports besides the tunnel
        await node.attach(
            EndpointAttachment(
                f"task-{container}", INGRESS.network_id, f"{address}/24", (), lab.path(container)
            )
        )
        assert await bridge_mac() == expected
    await node.detach("task-c1", INGRESS.network_id)
    assert await bridge_mac() == expected
