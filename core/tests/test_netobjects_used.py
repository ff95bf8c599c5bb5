"""The networks' used addresses follow the store's applies (issue 18).

Every write that allocates an address (a placement commit, a service create or update, a
session open) built its address books from a scan of every task, service and node. Now
``UsedAddresses`` keeps each network's held addresses as the store applies; these tests hold
it equal to the scan (``used_addresses``, kept as the oracle) after random changes, also inside
group commits, where a transaction sees the changes of the ones before it in its group."""

from __future__ import annotations

import asyncio
import random

import pytest
from shoal import states
from shoal.manager import netalloc, netobjects
from shoal.manager.netobjects import Allocations, UsedAddresses, used_addresses
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store

NETWORKS = ["net0", "net1", "net2"]


def _network(network_id: str) -> pb.Network:
    number = NETWORKS.index(network_id)
    network = pb.Network(id=network_id)
    network.allocated.subnet = f"10.0.{number}.0/24"
    network.allocated.gateway = f"10.0.{number}.1"
    return network


def _address(rng: random.Random, network_id: str) -> str:
    """One of few addresses, so that holders often share one (a dead task's and a live one's)."""
    return f"10.0.{NETWORKS.index(network_id)}.{rng.randint(2, 12)}/24"


def _attach(rng: random.Random, attachments: object) -> None:
    for network_id in rng.sample(NETWORKS, rng.randint(0, 2)):
        attachment = attachments.add()  # type: ignore[attr-defined]
        attachment.network.id = network_id
        attachment.addresses.append(_address(rng, network_id))


def _task(rng: random.Random, number: int) -> pb.Task:
    task = pb.Task(id=f"t{number}", service_id="s")
    task.desired_state = rng.choice([states.RUNNING, states.SHUTDOWN])
    task.status.state = rng.choice([states.NEW, states.RUNNING, states.FAILED])
    _attach(rng, task.networks)
    return task


def _service(rng: random.Random, number: int) -> pb.Service:
    service = pb.Service(id=f"s{number}")
    for network_id in rng.sample(NETWORKS, rng.randint(0, 2)):
        service.endpoint.virtual_ips.add(network_id=network_id, addr=_address(rng, network_id))
    return service


def _node(rng: random.Random, number: int) -> pb.Node:
    node = pb.Node(id=f"n{number}")
    _attach(rng, node.attachments)
    return node


MAKERS = {"task": _task, "service": _service, "node": _node}


def _change(rng: random.Random, tx: Tx, number: int) -> None:
    """Create, change (a task's state, any holder's addresses) or delete a task, service or
    node; now and then delete or make a network."""
    if rng.random() < 0.03:
        network_id = rng.choice(NETWORKS)
        if tx.get("network", network_id) is None:
            tx.create(_network(network_id))
        else:
            tx.delete("network", network_id)
        return
    kind = rng.choices(["task", "service", "node"], weights=[6, 2, 1])[0]
    existing = list(tx.view.table(kind).all())
    roll = rng.random()
    if roll < 0.4 or not existing:
        obj = MAKERS[kind](rng, number)
        if tx.get(kind, obj.id) is None:
            tx.create(obj)
        return
    victim = rng.choice(existing).id
    if roll < 0.55:
        tx.delete(kind, victim)
        return
    current = tx.get(kind, victim)
    if current is None:
        return
    changed = copy(current)
    if kind == "task" and roll < 0.85:
        changed.status.state = rng.choice([states.RUNNING, states.COMPLETE, states.FAILED])
        changed.desired_state = rng.choice([states.RUNNING, states.SHUTDOWN, states.REMOVE])
    else:
        replacement = MAKERS[kind](rng, number)
        replacement.id = changed.id
        changed = replacement
    tx.update(changed)


def _scanned(tx: Tx, network_id: str) -> set[str]:
    """The oracle: what a scan of the transaction's view holds in the network."""
    view = tx.view
    used = used_addresses(view.tasks.all(), view.services.all(), view.nodes.all())
    return {netobjects.plain(address) for address in used.get(network_id, ())}


async def test_used_addresses_equal_a_scan_in_every_transaction_of_random_groups() -> None:
    store = await instant_store()
    await store.update(lambda tx: [tx.create(_network(n)) for n in NETWORKS])
    rng = random.Random(18)
    compared, grouped = [0], [0]

    def write(tx: Tx, number: int) -> None:
        index = store.derived(UsedAddresses)
        for network_id in NETWORKS:
            expected = _scanned(tx, network_id)
            assert index.used_in(network_id, tx) == expected, f"{network_id} in transaction {number}"
            network = tx.get("network", network_id)
            if network is not None:  # the book a write would allocate from: the same, and the gateway
                book = Allocations.of(tx).book(network)
                assert book.used == expected | {network.allocated.gateway}
                scanned = netalloc.AddressBook.of(
                    network.allocated.subnet, network.allocated.gateway, expected
                )
                taken = [book.take(), book.take()]
                assert taken == [scanned.take(), scanned.take()], f"not the lowest free in {network_id}"
        compared[0] += 1
        grouped[0] += any(True for _ in tx.group_changes())
        for k in range(rng.randint(1, 4)):
            _change(rng, tx, number * 10 + k)

    for round_number in range(120):
        # Several writes at once: one group commit, each transaction over the ones before it.
        writes = [
            store.update(lambda tx, n=round_number * 8 + w: write(tx, n)) for w in range(rng.randint(1, 6))
        ]
        await asyncio.gather(*writes)
    assert compared[0] > 300 and grouped[0] > 100, "the writes did not run in groups"
    final = Tx(store.view, store)
    for network_id in NETWORKS:
        assert store.derived(UsedAddresses).used_in(network_id, final) == _scanned(final, network_id)


async def test_an_allocating_write_does_not_scan_every_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 2,000 tasks on the network, a write that takes one address looks at none of them."""
    store: ObjectStore = await instant_store()
    network = _network("net0")
    network.allocated.subnet = "10.0.0.0/16"

    def seed(tx: Tx) -> None:
        tx.create(network)
        for n in range(2000):
            task = pb.Task(id=f"t{n}", service_id="s", desired_state=states.RUNNING)
            task.status.state = states.RUNNING
            attachment = task.networks.add(addresses=[f"10.0.{2 + n // 250}.{n % 250 + 1}/16"])
            attachment.network.id = "net0"
            tx.create(task)

    await store.update(seed)
    await store.update(lambda tx: Allocations.of(tx).book(network))  # the index's one scan
    looked_at: list[str] = []
    scan, holdings = netobjects.used_addresses, netobjects.holdings
    monkeypatch.setattr(netobjects, "used_addresses", lambda *of: looked_at.append("scan") or scan(*of))
    monkeypatch.setattr(
        netobjects, "holdings", lambda kind, obj: looked_at.append(kind) or holdings(kind, obj)
    )
    taken = await store.update(lambda tx: Allocations.of(tx).book(network).take())
    assert taken == "10.0.0.2/16"
    assert looked_at == [], f"taking one address looked at: {looked_at}"


def test_a_book_of_a_transaction_made_by_hand_still_scans() -> None:
    """A ``Tx`` without a store (a test's) reads the view directly."""
    from shoal.store.memory import ReadView

    view = ReadView()
    network = _network("net1")
    view.put("network", network)
    task = pb.Task(id="t1", desired_state=states.RUNNING)
    task.networks.add(addresses=["10.0.1.2/24"]).network.id = "net1"
    view.put("task", task)
    tx = Tx(view)  # a transaction outlives its allocations (they hold it weakly)
    book = Allocations.of(tx).book(network)
    assert book.used == {"10.0.1.1", "10.0.1.2"}
    assert isinstance(book, netalloc.AddressBook)
