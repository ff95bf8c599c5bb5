"""Address books at scale: the leader's cost of writes with 20,000 tasks on 2 overlay networks.

In process (the kernel's ObjectStore with an instantly committing log, no raft, no network):
what is timed is only the leader's work for each write, the transaction and its apply.

- ``status``: 1,000 task status updates (RUNNING again, a new timestamp), each its own write,
  then the same 1,000 in 2 writes of 500 (the dispatcher's batches). They allocate nothing; the
  address and endpoint indexes pay a little on each apply.
- ``network state``: one rebuild of every node's ``NetworkState`` (the dispatcher's publisher,
  after each gathered change of a task with networks), the mean of 20.
- ``assign``: 1,000 writes that each assign one new task (``Allocations.task_networks``: an
  address on each of its 2 networks), as placements and service updates do; then 1,000 tasks
  assigned in 2 writes of 500 (the scheduler driver's pieces).

Before issue 18's incremental address books, each allocating write scanned every task,
service and node, and each rebuild of the network state passed over every task; run it against
an older tree with ``PYTHONPATH=<old>/core/src`` to compare.

    .venv/bin/python bench/bench_address_books.py [--tasks 20000] [--writes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from shoal import states
from shoal.manager.netobjects import Allocations
from shoal.manager.netstate import NetworkStatePublisher
from shoal.manager.tasks import new_task
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store

SERVICES = 40
CHUNK = 500
REBUILDS = 20


def _network(number: int) -> pb.Network:
    network = pb.Network(id=f"net{number}", vni=4096 + number)
    network.spec.annotations.name = f"net{number}"
    network.spec.driver = "overlay"
    network.allocated.subnet = f"10.{number + 1}.0.0/16"
    network.allocated.gateway = f"10.{number + 1}.0.1"
    return network


def _service(number: int, networks: list[pb.Network]) -> pb.Service:
    service = pb.Service(id=f"svc{number}")
    service.spec.annotations.name = f"svc{number}"
    service.spec.task.container.image = "app:1"
    for network in networks:
        service.spec.networks.add(target=network.id)
    return service


async def _timed(label: str, writes: list[Callable[[Tx], Any]], store: ObjectStore) -> float:
    wall, cpu = time.perf_counter(), time.process_time()
    for write in writes:
        await store.update(write)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"  {label:<52} {wall * 1000:9.1f} ms wall  {cpu * 1000:9.1f} ms CPU  ({len(writes)} writes)")
    return wall


async def main(task_count: int, write_count: int) -> None:
    store = await instant_store()
    networks = [_network(0), _network(1)]
    services = [_service(n, networks) for n in range(SERVICES)]

    def seed_networks(tx: Tx) -> None:
        for network in networks:
            tx.create(network)
        for service in services:
            tx.create(service)
            Allocations.of(tx).service_vips(service)

    await store.update(seed_networks)
    numbers = iter(range(1, 10**9))

    def assign(tx: Tx, count: int) -> None:
        for _ in range(count):
            service = services[next(numbers) % SERVICES]
            task = new_task(tx.service(service.id) or service, next(numbers))
            task.node_id = "n1"
            task.status.state = states.RUNNING
            Allocations.of(tx).task_networks(task)
            tx.create(task)

    started = time.perf_counter()
    for _ in range(task_count // CHUNK):
        await store.update(lambda tx: assign(tx, CHUNK))
    print(
        f"{len(store.view.tasks)} tasks on {len(networks)} networks, {SERVICES} services "
        f"(seeded in {time.perf_counter() - started:.1f} s), load average {os.getloadavg()[0]:.2f}"
    )
    publisher = NetworkStatePublisher(store)
    publisher.picture()  # what the leader's dispatcher holds (and, since issue 18, its index)
    running = [t.id for t in store.view.tasks.all()][:write_count]

    def status(tx: Tx, task_ids: list[str]) -> None:
        for task_id in task_ids:
            task = copy(tx.task(task_id))  # type: ignore[type-var]
            task.status.timestamp = time.time()
            tx.update(task)

    await _timed("status: 1 update per write", [lambda tx, i=i: status(tx, [i]) for i in running], store)
    await _timed(
        f"status: {CHUNK} updates per write",
        [lambda tx, c=running[n : n + CHUNK]: status(tx, c) for n in range(0, write_count, CHUNK)],
        store,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(REBUILDS):
        publisher._rebuild()  # what the dispatcher's publisher does after each gathered change
    wall, cpu = (time.perf_counter() - wall) / REBUILDS, (time.process_time() - cpu) / REBUILDS
    label = f"network state: one rebuild (mean of {REBUILDS})"
    print(f"  {label:<52} {wall * 1000:9.1f} ms wall  {cpu * 1000:9.1f} ms CPU")
    await _timed("assign: 1 task per write", [lambda tx: assign(tx, 1) for _ in range(write_count)], store)
    await _timed(
        f"assign: {CHUNK} tasks per write",
        [lambda tx: assign(tx, CHUNK) for _ in range(write_count // CHUNK)],
        store,
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--writes", type=int, default=1_000)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.writes))
