"""Overlay networks on real kernel networking: hosts are namespaces on one LAN, VXLAN between
them, tasks are namespaces attached by the provider (``shoal_network_overlay.testing``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from shoal.plugin import EndpointAttachment, NetworkError, NetworkSpec, NodeNetwork
from shoal_network_overlay import OverlayNetwork
from shoal_network_overlay.names import node_digest, vxlan_name
from shoal_network_overlay.testing import HOSTS, Lab

NET_A = NetworkSpec("neta", "a", "10.10.1.0/24", "10.10.1.1", 4100)
NET_B = NetworkSpec("netb", "b", "10.10.2.0/24", "10.10.2.1", 4200)
CONTAINERS = 3


def attachment(lab: Lab, container: str, spec: NetworkSpec, address: str) -> EndpointAttachment:
    return EndpointAttachment(
        f"task-{container}", spec.network_id, address, (container,), lab.path(container)
    )


async def test_tasks_of_one_network_reach_each_other_across_hosts_and_no_other(lab: Lab) -> None:
    before = lab.snapshot("h1", "h2")
    nodes = {h: OverlayNetwork(netns=lab.path(h)) for h in ("h1", "h2")}
    for host, node in nodes.items():
        await node.start(NodeNetwork(f"node-{host}", HOSTS[host]))
    # peers first, networks later: a network made after set_peers floods to them too
    await nodes["h1"].set_peers([HOSTS["h2"], HOSTS["h3"]])
    await nodes["h1"].set_peers([HOSTS["h2"]])  # replaced, not added
    await nodes["h1"].create_network(NET_A)
    await nodes["h1"].create_network(NET_A)  # idempotent
    for spec in (NET_A, NET_B):
        await nodes["h2"].create_network(spec)
    await nodes["h2"].set_peers([HOSTS["h1"]])
    await nodes["h1"].attach(attachment(lab, "c1", NET_A, "10.10.1.2/24"))
    await nodes["h2"].attach(attachment(lab, "c2", NET_A, "10.10.1.3/24"))
    await nodes["h2"].attach(attachment(lab, "c3", NET_B, "10.10.2.3/24"))
    await nodes["h2"].attach(attachment(lab, "c3", NET_B, "10.10.2.3/24"))  # idempotent
    lab.serve("c2", "c2", 9000)
    lab.serve("c3", "c3", 9000)

    assert await lab.requests("c1", "10.10.1.3", 9000, 3) == ["c2"] * 3
    # a full-size packet (1500 bytes) crosses the tunnel: the endpoints' MTU leaves room for
    # VXLAN's 50 bytes, so the task fragments it instead of the bridge dropping it
    await lab.sh("c1", "busybox", "ping", "-c", "1", "-W", "2", "-s", "1472", "10.10.1.3")
    assert await lab.requests("c1", "10.10.2.3", 9000, 1) == [""]  # another network: no route
    vxlan = vxlan_name(node_digest("node-h1"), NET_A.vni)
    flood = await lab.sh("h1", "bridge", "fdb", "show", "dev", vxlan)
    assert f"dst {HOSTS['h2']}" in flood and f"dst {HOSTS['h3']}" not in flood

    with pytest.raises(NetworkError, match=r"is not in 10\.10\.1\.0/24"):
        await nodes["h1"].attach(attachment(lab, "c1", NET_A, "10.10.9.9/24"))
    with pytest.raises(NetworkError, match="does not exist on this node"):
        await nodes["h1"].attach(attachment(lab, "c1", NET_B, "10.10.2.2/24"))
    gone = EndpointAttachment(
        "task-gone", NET_A.network_id, "10.10.1.9/24", (), "/run/netns/shoal-no-such-ns"
    )
    with pytest.raises(NetworkError, match=r"^overlay: cannot attach task task-gone to network a: [^\n]+$"):
        await nodes["h1"].attach(gone)  # the container is gone: one line, nothing left behind
    assert len([d for d in lab.links("h1") if d.startswith("she")]) == 1  # c1's endpoint only

    await nodes["h2"].detach("task-c2", NET_A.network_id)
    assert await lab.requests("c1", "10.10.1.3", 9000, 1) == [""]
    for node in nodes.values():
        await node.cleanup()
        await node.cleanup()
        await node.close()
    assert lab.snapshot("h1", "h2") == before
    assert lab.links("c1") == ["lo"] and lab.links("c3") == ["lo"]  # the task ends went with the pairs


async def test_vxlan_from_an_address_that_is_not_a_peer_is_dropped(lab: Lab) -> None:
    """A host on the underlay that is not in the swarm cannot inject frames into a network."""
    nodes = {h: OverlayNetwork(netns=lab.path(h)) for h in ("h1", "h2")}
    for host, node in nodes.items():
        await node.start(NodeNetwork(f"node-{host}", HOSTS[host]))
        await node.create_network(NET_A)
    await nodes["h1"].attach(attachment(lab, "c1", NET_A, "10.10.1.2/24"))
    await nodes["h2"].attach(attachment(lab, "c2", NET_A, "10.10.1.3/24"))
    lab.serve("c2", "c2", 9000)
    await nodes["h1"].set_peers([HOSTS["h2"]])
    await nodes["h2"].set_peers([HOSTS["h3"]])  # h1 is not h2's peer: h2 drops h1's VXLAN
    assert await lab.requests("c1", "10.10.1.3", 9000, 1) == [""]
    await nodes["h2"].set_peers([HOSTS["h1"]])
    # c1's failed ARP for c2 may still be pending: start its resolution afresh
    await lab.sh("c1", "ip", "neigh", "flush", "all")
    assert await lab.requests("c1", "10.10.1.3", 9000, 1) == ["c2"]
    await asyncio.gather(*(node.cleanup() for node in nodes.values()))


async def test_nodes_sharing_a_namespace_do_not_collide_and_clean_up_only_their_own(lab: Lab) -> None:
    """Two nodes in one namespace (as in tests): the kernel allows one VXLAN device per ID there,
    so the second node's network is a bridge alone; each node's cleanup removes only its own."""
    before = lab.snapshot("h1")
    first, second = (OverlayNetwork(netns=lab.path("h1")) for _ in range(2))
    await first.start(NodeNetwork("node-first", HOSTS["h1"]))
    await second.start(NodeNetwork("node-second", HOSTS["h1"]))
    for node, container, address in ((first, "c1", "10.10.1.2/24"), (second, "c2", "10.10.1.3/24")):
        await node.create_network(NET_A)
        await node.attach(attachment(lab, container, NET_A, address))
        await node.set_peers([HOSTS["h2"]])
    await first.cleanup()
    remaining = lab.links("h1")
    assert any(d.startswith("shb" + node_digest("node-second")) for d in remaining)
    assert not any(d.startswith("shb" + node_digest("node-first")) for d in remaining)
    await second.cleanup()
    assert lab.snapshot("h1") == before


async def test_a_node_removed_while_stopped_is_cleaned_up_by_a_provider_that_never_started(
    lab: Lab, tmp_path: Path
) -> None:
    """``shoal swarm leave`` on a stopped daemon builds the provider only to call ``cleanup``:
    the node ID recorded by ``start`` in the plugin's state directory finds its devices."""
    before = lab.snapshot("h1")
    first = OverlayNetwork(netns=lab.path("h1"), state_dir=tmp_path)
    await first.start(NodeNetwork("node-h1", HOSTS["h1"]))
    await first.create_network(NET_A)
    await first.attach(attachment(lab, "c1", NET_A, "10.10.1.2/24"))
    await first.close()  # the daemon stops: the data path stays
    assert lab.snapshot("h1") != before
    await OverlayNetwork(netns=lab.path("h1"), state_dir=tmp_path).cleanup()
    assert lab.snapshot("h1") == before
    assert lab.links("c1") == ["lo"]


async def test_a_replacement_reusing_a_task_address_on_another_host_is_reached_at_once(lab: Lab) -> None:
    """The managers give a replacement its dead predecessor's address. The tasks that talked to
    the old one keep its neighbour entry and the nodes their learned forwarding entries: the
    derived MAC and the new endpoint's announcement make the new one reachable at once."""
    nodes = {h: OverlayNetwork(netns=lab.path(h)) for h in ("h1", "h2")}
    for host, node in nodes.items():
        await node.start(NodeNetwork(f"node-{host}", HOSTS[host]))
        await node.set_peers([HOSTS[h] for h in nodes if h != host])
        await node.create_network(NET_A)
    await nodes["h1"].attach(attachment(lab, "c1", NET_A, "10.10.1.2/24"))
    await nodes["h2"].attach(attachment(lab, "c2", NET_A, "10.10.1.3/24"))
    lab.serve("c2", "c2", 9000)
    lab.serve("c3", "c3", 9000)
    assert await lab.requests("c1", "10.10.1.3", 9000, 1) == ["c2"]
    await nodes["h2"].detach("task-c2", NET_A.network_id)  # c2 dies; c3, on h1, gets its address
    await nodes["h1"].attach(attachment(lab, "c3", NET_A, "10.10.1.3/24"))
    assert await lab.requests("c1", "10.10.1.3", 9000, 1) == ["c3"]
    for node in nodes.values():
        await node.cleanup()
