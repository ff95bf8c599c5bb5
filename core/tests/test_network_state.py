"""Each node's NetworkState: built once for the swarm and sliced per node, pushed in the node's
session when it changes (a task starting or stopping, a node joining), promptly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from shoal import rpc, states
from shoal.manager import netobjects, netstate
from shoal.manager.dispatcher import Dispatcher, _varint
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import PeerIdentity
from shoal.store.memory import DELETE, UPDATE, Event, ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store


def _attachment(network: pb.Network, address: str, *aliases: str) -> pb.NetworkAttachment:
    attachment = pb.NetworkAttachment(addresses=[address], aliases=list(aliases))
    attachment.network.CopyFrom(network)
    return attachment


def _task(
    task_id: str, service: pb.Service, node_id: str, state: int, *attachments: pb.NetworkAttachment
) -> pb.Task:
    task = pb.Task(id=task_id, service_id=service.id, node_id=node_id, desired_state=states.RUNNING)  # type: ignore[arg-type]
    task.status.state = state  # type: ignore[assignment]
    task.networks.extend(attachments)
    return task


async def _swarm() -> tuple[ObjectStore, dict[str, pb.Network]]:
    """Three nodes (w1, w2 on 192.168.1.x; w3 shares w2's address, as test nodes on one host
    do), an ingress network and a user network ``front``; ``web`` publishes 8080 and is on
    ``front`` (two running tasks and one starting), ``api`` is on ``front`` (one task, on w3)."""
    store = await instant_store()
    ingress = netobjects.ingress_network([], 0)
    front = pb.Network(id="front", vni=4097)
    front.spec.annotations.name = "front"
    front.allocated.subnet, front.allocated.gateway = "10.0.1.0/24", "10.0.1.1"

    def seed(tx: Tx) -> None:
        tx.create(ingress)
        tx.create(front)
        for number, (node_id, addr) in enumerate(
            [("w1", "192.168.1.1:4242"), ("w2", "192.168.1.2:4242"), ("w3", "192.168.1.2:4343")], start=2
        ):
            node = pb.Node(id=node_id)
            node.description.addr = addr
            node.attachments.append(_attachment(ingress, f"10.0.0.{number}/24"))
            tx.create(node)
        web = pb.Service(id="web")
        web.spec.annotations.name = "web"
        web.spec.networks.add(target="front", aliases=["www"])
        web.endpoint.ports.add(target_port=80, published_port=8080)
        web.endpoint.virtual_ips.add(network_id=ingress.id, addr="10.0.0.10/24")
        web.endpoint.virtual_ips.add(network_id="front", addr="10.0.1.10/24")
        api = pb.Service(id="api")
        api.spec.annotations.name = "api"
        api.spec.networks.add(target="front")
        api.endpoint.virtual_ips.add(network_id="front", addr="10.0.1.20/24")
        tx.create(web)
        tx.create(api)
        for task_id, node_id, state, number in [
            ("web1", "w1", states.RUNNING, 11),
            ("web2", "w2", states.RUNNING, 12),
            ("web3", "w1", states.STARTING, 13),
        ]:
            tx.create(
                _task(
                    task_id,
                    web,
                    node_id,
                    state,
                    _attachment(ingress, f"10.0.0.{number}/24"),
                    _attachment(front, f"10.0.1.{number}/24", "web", "www"),
                )
            )
        tx.create(_task("api1", api, "w3", states.RUNNING, _attachment(front, "10.0.1.21/24", "api")))

    await store.update(seed)
    return store, {"ingress": ingress, "front": front}


async def test_each_node_gets_its_slice_of_the_swarm_picture() -> None:
    store, networks = await _swarm()
    picture = netstate.build(store.view)

    w1 = picture.message_for("w1")
    assert list(w1.peer_ips) == ["192.168.1.2"]  # the other nodes' addresses, once each, not its own
    assert list(w1.ingress.addresses) == ["10.0.0.2/24"]
    assert w1.ingress.network.id == networks["ingress"].id
    assert [
        (p.service_id, p.protocol, p.published, p.target, list(p.backends)) for p in w1.ingress_ports
    ] == [
        ("web", "tcp", 8080, 80, ["10.0.0.11", "10.0.0.12"])  # the starting task is not a backend
    ]
    (front,) = w1.records
    assert front.network_id == "front"
    assert [(r.name, r.vip, list(r.task_addresses)) for r in front.records] == [
        ("api", "10.0.1.20", ["10.0.1.21"]),
        ("web", "10.0.1.10", ["10.0.1.11", "10.0.1.12"]),
        ("www", "10.0.1.10", ["10.0.1.11", "10.0.1.12"]),
    ]

    w2 = picture.message_for("w2")
    assert list(w2.peer_ips) == ["192.168.1.1"]
    assert list(w2.ingress_ports) == list(w1.ingress_ports)  # every ingress port on every node
    assert list(w2.records) == list(w1.records)

    lonely = picture.message_for("not-a-node")  # no task: peers and ingress ports, no records
    assert list(lonely.peer_ips) == ["192.168.1.1", "192.168.1.2"] and not lonely.records
    assert not lonely.HasField("ingress")


async def test_dnsrr_has_no_vip_and_stopped_tasks_leave_the_records() -> None:
    store, _ = await _swarm()

    def change(tx: Tx) -> None:
        api = copy(tx.service("api"))  # type: ignore[type-var]
        api.spec.endpoint.mode = pb.EndpointSpec.DNSRR
        del api.endpoint.virtual_ips[:]
        tx.update(api)
        web2 = copy(tx.task("web2"))  # type: ignore[type-var]
        web2.desired_state = states.SHUTDOWN  # type: ignore[assignment]
        tx.update(web2)

    await store.update(change)
    w1 = netstate.build(store.view).message_for("w1")
    assert [list(p.backends) for p in w1.ingress_ports] == [["10.0.0.11"]]
    assert [(r.name, r.vip, list(r.task_addresses)) for r in w1.records[0].records][:2] == [
        ("api", "", ["10.0.1.21"]),
        ("web", "10.0.1.10", ["10.0.1.11"]),
    ]


def _open(dispatcher: Dispatcher, node_id: str) -> AsyncIterator[bytes]:
    """A session as the node's agent opens it (with the description the store already has)."""
    node = dispatcher.store.view.nodes.get(node_id)
    assert node is not None
    request = rpb.SessionRequest(description=node.description).SerializeToString()
    return dispatcher.session(request, PeerIdentity(node_id=node_id, role=rpc.WORKER_OU, cluster_id="c1"))


async def _next(session: AsyncIterator[bytes]) -> rpb.SessionMessage:
    async with asyncio.timeout(2.0):
        return rpb.SessionMessage.FromString(await session.__anext__())


async def test_session_pushes_the_new_state_promptly_and_builds_once_per_change() -> None:
    store, _ = await _swarm()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    publisher = asyncio.create_task(dispatcher.network_state.run())
    sessions = [_open(dispatcher, n) for n in ("w1", "w2", "w3")]
    try:
        first = [await _next(s) for s in sessions]
        assert [list(p.backends) for p in first[0].network.ingress_ports] == [["10.0.0.11", "10.0.0.12"]]
        builds = dispatcher.network_state.builds

        def running(tx: Tx) -> None:
            web3 = copy(tx.task("web3"))  # type: ignore[type-var]
            web3.status.state = states.RUNNING  # type: ignore[assignment]
            tx.update(web3)

        started = time.monotonic()
        await store.update(running)
        pushed = [await _next(s) for s in sessions]
        # 20 ms of gathering by design (300 ms allowed); 1 s leaves room for a loaded machine.
        assert time.monotonic() - started < 1.0
        for message in pushed:  # every node: the ingress port gained a backend
            assert [list(p.backends) for p in message.network.ingress_ports] == [
                ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
            ]
        assert dispatcher.network_state.builds == builds + 1  # once for the swarm, not per node

        # A change no node's state holds (a status message) does not even wake the publisher.
        web3 = store.view.tasks.get("web3")
        assert web3 is not None
        relabelled = copy(web3)
        relabelled.status.message = "still running"
        assert not netstate.relevant(Event(UPDATE, "task", relabelled, web3))
        assert netstate.relevant(Event(DELETE, "task", web3, web3))
    finally:
        publisher.cancel()
        for session in sessions:
            await session.aclose()  # type: ignore[attr-defined]


def test_appended_state_reads_back_whatever_its_size() -> None:
    """The dispatcher appends the serialised state to the session message instead of parsing it
    into the message: the agent must read exactly the state, for any length (1 to 3 byte
    varints)."""
    for count in (0, 3, 200, 5000):
        state = rpb.NetworkState(peer_ips=[f"10.{i // 250}.0.{i % 250}" for i in range(count)])
        encoded = state.SerializeToString()
        raw = (
            rpb.SessionMessage(session_id="s").SerializeToString() + b"\x3a" + _varint(len(encoded)) + encoded
        )
        message = rpb.SessionMessage.FromString(raw)
        assert message.session_id == "s" and message.network == state and message.HasField("network")


async def test_a_removed_node_leaves_every_other_nodes_peers() -> None:
    """``node rm``: the other nodes are told at once (their VXLAN peers, and so the overlay
    traffic they accept, no longer include it)."""
    store, _ = await _swarm()
    await store.update(
        lambda tx: tx.create(pb.Node(id="w4", description=pb.NodeDescription(addr="192.168.1.4:1")))
    )
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    publisher = asyncio.create_task(dispatcher.network_state.run())
    session = _open(dispatcher, "w1")
    try:
        assert list((await _next(session)).network.peer_ips) == ["192.168.1.2", "192.168.1.4"]
        await store.update(lambda tx: tx.delete("node", "w4"))
        assert list((await _next(session)).network.peer_ips) == ["192.168.1.2"]
    finally:
        publisher.cancel()
        await session.aclose()  # type: ignore[attr-defined]
