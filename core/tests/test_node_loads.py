"""The scheduler's per-node totals follow the store's applies (issue 18): a tick no longer
counts every running task (100,000 tasks: most of a second of the leader's loop per tick)."""

from __future__ import annotations

import random

import pytest
from shoal import placement, states
from shoal.manager.nodeload import NodeLoads, unassigned
from shoal.manager.scheduler_driver import SchedulerDriver
from shoal.proto import objects_pb2 as pb
from shoal.roles.scheduler import NodeInfo
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store
from shoal_scheduler_spread import SpreadScheduler

NODES = [f"n{i}" for i in range(5)]


def _node(node_id: str) -> pb.Node:
    node = pb.Node(id=node_id)
    node.status.state = pb.NodeStatus.READY
    node.description.resources.nano_cpus = 8_000_000_000
    node.description.resources.memory_bytes = 16 << 30
    node.description.resources.generic.add(kind="gpu", value=2)
    return node


def _task(rng: random.Random, number: int) -> pb.Task:
    task = pb.Task(id=f"t{number}", service_id=rng.choice(["a", "b"]), slot=number)
    task.desired_state = states.RUNNING
    task.status.state = rng.choice([states.NEW, states.PENDING, states.ASSIGNED, states.RUNNING])
    if task.status.state >= states.ASSIGNED or rng.random() < 0.2:  # some global tasks: preassigned
        task.node_id = rng.choice(NODES)
    task.spec.resources.reservations.nano_cpus = rng.choice([0, 100_000_000])
    task.spec.resources.reservations.memory_bytes = rng.choice([0, 1 << 20])
    if rng.random() < 0.3:
        task.spec.resources.reservations.generic.add(kind=rng.choice(["gpu", "fpga"]), value=1)
    if rng.random() < 0.3:
        task.endpoint.ports.add(
            protocol=pb.PortConfig.TCP, publish_mode=pb.PortConfig.HOST, published_port=rng.choice([80, 81])
        )
    return task


def _change(rng: random.Random, tx: Tx, number: int) -> None:
    """One random change of the kinds the orchestrator, scheduler and agents make."""
    tasks = list(tx.view.tasks.all())
    roll = rng.random()
    if roll < 0.4 or not tasks:
        tx.create(_task(rng, number))
        return
    current = tx.task(rng.choice(tasks).id)  # not deleted earlier in this transaction
    if current is None:
        return
    task = copy(current)
    if roll < 0.55:
        tx.delete("task", task.id)
        return
    if roll < 0.7:
        task.desired_state = rng.choice([states.SHUTDOWN, states.REMOVE])
    elif roll < 0.8:
        task.node_id = rng.choice(NODES)
        task.status.state = states.ASSIGNED
    else:
        task.status.state = rng.choice([states.RUNNING, states.FAILED, states.COMPLETE])
    tx.update(task)


def _shape(infos: dict[str, NodeInfo]) -> dict[str, tuple[object, ...]]:
    return {
        node_id: (
            dict(info.tasks_by_service),
            info.total_tasks,
            info.available_nano_cpus,
            info.available_memory_bytes,
            set(info.used_host_ports),
            {kind: value for kind, value in info.available_generic.items() if value},
        )
        for node_id, info in infos.items()
    }


async def test_node_loads_match_a_rebuild_from_every_task_after_any_change() -> None:
    store = await instant_store()
    await store.update(lambda tx: [tx.create(_node(n)) for n in NODES])
    loads = NodeLoads(store)
    loads.start()
    rng = random.Random(18)
    for number in range(400):
        await store.update(
            lambda tx, n=number: [_change(rng, tx, n * 10 + k) for k in range(rng.randint(1, 4))]
        )
        view = store.view
        expected = placement.build_node_infos(view.nodes.all(), view.tasks.all())
        assert _shape(loads.node_infos()) == _shape(expected), f"after change {number}"
        assert {t.id for t in loads.pending()} == {t.id for t in view.tasks.all() if unassigned(t)}
    loads.stop()
    await store.update(lambda tx: tx.create(_task(rng, 99_999)))
    assert "t99999" not in {t.id for t in loads.pending()}, "a stopped NodeLoads still follows the store"


async def test_a_tick_counts_only_the_tasks_it_places(monkeypatch: pytest.MonkeyPatch) -> None:
    store: ObjectStore = await instant_store()

    def seed(tx: Tx) -> None:
        for node_id in NODES:
            tx.create(_node(node_id))
        for n in range(2000):
            tx.create(
                pb.Task(
                    id=f"r{n}",
                    service_id="a",
                    node_id=NODES[n % 5],
                    status=pb.TaskStatus(state=states.RUNNING),
                )
            )

    await store.update(seed)
    driver = SchedulerDriver(store, SpreadScheduler())
    driver.loads.start()  # as ``start`` does, without the driver's own loop
    await store.update(lambda tx: [tx.create(pb.Task(id=f"p{n}", service_id="a", slot=n)) for n in range(10)])
    counted = [0]
    add_task = NodeInfo.add_task

    def counting(self: NodeInfo, task: pb.Task) -> None:
        counted[0] += 1
        add_task(self, task)

    monkeypatch.setattr(NodeInfo, "add_task", counting)
    await driver.tick()
    placed = [t for t in store.view.tasks.all() if t.id.startswith("p")]
    assert all(t.status.state == states.ASSIGNED for t in placed)
    assert sorted(sum(1 for t in store.view.tasks.all() if t.node_id == n) for n in NODES) == [402] * 5
    assert counted[0] == 10, f"a tick counted {counted[0]} tasks into node totals for 10 placements"
