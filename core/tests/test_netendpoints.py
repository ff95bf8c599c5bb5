"""Each node's network state is built from endpoints kept as the store applies (issue 18).

``netstate.build`` walked every task on each rebuild (20,000 tasks on overlay networks: ~150 ms
of the leader's loop, as often as every third of its time under churn). ``TaskEndpoints`` keeps
the serving addresses per (network, service) and the live networks per node; these tests hold
a build from it equal to the build from a pass over every task (kept as the oracle)."""

from __future__ import annotations

import random

import pytest
from shoal import states
from shoal.manager import netendpoints, netstate
from shoal.manager.netendpoints import TaskEndpoints
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import Tx, copy
from shoal.testing.objectstore import instant_store

NETWORK_IDS = ["ingress", "front", "back"]
NODE_IDS = ["w1", "w2", "w3"]
SERVICE_IDS = ["web", "api", "db"]


def _network(network_id: str) -> pb.Network:
    network = pb.Network(id=network_id)
    network.spec.annotations.name = network_id
    network.spec.ingress = network_id == "ingress"
    return network


def _service(rng: random.Random, service_id: str) -> pb.Service:
    service = pb.Service(id=service_id)
    service.spec.annotations.name = service_id
    for network_id in rng.sample(NETWORK_IDS[1:], rng.randint(0, 2)):
        service.spec.networks.add(target=network_id, aliases=rng.sample(["x", "y"], rng.randint(0, 1)))
        service.endpoint.virtual_ips.add(
            network_id=network_id, addr=f"10.9.{NETWORK_IDS.index(network_id)}.9/24"
        )
    if rng.random() < 0.5:
        service.endpoint.ports.add(target_port=80, published_port=8000 + SERVICE_IDS.index(service_id))
    return service


def _task(rng: random.Random, number: int) -> pb.Task:
    task = pb.Task(id=f"t{number}", service_id=rng.choice(SERVICE_IDS))
    _restate(rng, task)
    for network_id in rng.sample(NETWORK_IDS, rng.randint(0, 2)):
        attachment = task.networks.add()
        attachment.network.id = network_id
        if rng.random() < 0.9:  # now and then an attachment without an address
            attachment.addresses.append(f"10.9.{NETWORK_IDS.index(network_id)}.{rng.randint(10, 14)}/24")
    return task


def _restate(rng: random.Random, task: pb.Task) -> None:
    task.desired_state = rng.choice([states.RUNNING, states.RUNNING, states.SHUTDOWN])
    task.status.state = rng.choice([states.PENDING, states.ASSIGNED, states.RUNNING, states.FAILED])
    task.node_id = (
        rng.choice(["", *NODE_IDS]) if task.status.state == states.PENDING else rng.choice(NODE_IDS)
    )
    task.status.timestamp = rng.random()


def _write(rng: random.Random, tx: Tx, number: int) -> None:
    """A task created, restated, moved, re-attached or deleted; now and then a service changed."""
    if rng.random() < 0.1:
        service = _service(rng, rng.choice(SERVICE_IDS))
        if tx.service(service.id) is None:
            tx.create(service)
        else:
            tx.update(service)
        return
    existing = [t.id for t in tx.view.tasks.all()]
    pick = rng.random()
    if pick < 0.35 or not existing:
        tx.create(_task(rng, number))
    elif pick < 0.5:
        tx.delete("task", rng.choice(existing))
    elif (found := tx.task(rng.choice(existing))) is not None:
        task = copy(found)
        if pick < 0.9:
            _restate(rng, task)
        else:
            fresh = _task(rng, number)
            del task.networks[:]
            task.networks.extend(fresh.networks)
        tx.update(task)


def _parts(picture: netstate.NetworkPicture) -> tuple[object, ...]:
    return (picture.records, picture.ingress_ports, picture.node_networks, picture.node_ingress)


async def test_a_build_from_the_endpoints_equals_a_pass_over_every_task() -> None:
    store = await instant_store()
    rng = random.Random(18)

    def seed(tx: Tx) -> None:
        for network_id in NETWORK_IDS:
            tx.create(_network(network_id))
        for node_id in NODE_IDS:
            tx.create(pb.Node(id=node_id))
        for service_id in SERVICE_IDS:
            tx.create(_service(rng, service_id))

    await store.update(seed)
    endpoints = store.derived(TaskEndpoints)
    for number in range(300):
        await store.update(
            lambda tx, n=number: [_write(rng, tx, n * 10 + k) for k in range(rng.randint(1, 3))]
        )
        assert _parts(netstate.build(store.view, endpoints)) == _parts(netstate.build(store.view)), (
            f"after write {number}"
        )
    assert any(netstate.build(store.view).records.values()), "no record was ever built"


async def test_the_publisher_rebuilds_without_a_pass_over_the_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    store = await instant_store()
    rng = random.Random(5)
    await store.update(lambda tx: [tx.create(_network(n)) for n in NETWORK_IDS])
    await store.update(lambda tx: [tx.create(_task(rng, n)) for n in range(500)])
    publisher = netstate.NetworkStatePublisher(store)
    publisher.picture()  # the first build also builds the endpoints (one pass, once)
    await store.update(lambda tx: tx.create(_task(rng, 999)))
    looked_at: list[str] = []
    real = netendpoints.holds_endpoint
    for module in (netstate, netendpoints):
        monkeypatch.setattr(module, "holds_endpoint", lambda task: looked_at.append(task.id) or real(task))
    publisher._rebuild()
    assert looked_at == [], f"a rebuild looked at {len(looked_at)} tasks"
