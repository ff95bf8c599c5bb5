"""The task reaper's per-slot index follows the store's applies (issue 18).

It was fed by a store watch, which hears of a change loop turns after ``apply``: a prune could
run against an index that did not list a task just created in its slot yet, or still listed
one already deleted, and the reaper carried code to cope. As an ``ApplyListener`` it holds,
whenever ``apply`` has returned, exactly the view's tasks of each slot."""

from __future__ import annotations

import asyncio
import random

import pytest
from shoal import states
from shoal.manager import reaper as reaper_module
from shoal.manager.reaper import SlotKey, TaskReaper
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store

SERVICES = ["a", "b", "c"]
NODES = ["n1", "n2"]


def _scan(store: ObjectStore) -> dict[SlotKey, set[str]]:
    """The index a full scan of the view gives (the oracle)."""
    slots: dict[SlotKey, set[str]] = {}
    for task in store.view.tasks.all():
        slots.setdefault(TaskReaper._slot_of(task), set()).add(task.id)
    return slots


def _task(rng: random.Random, number: int) -> pb.Task:
    task = pb.Task(id=f"t{number}", service_id=rng.choice(SERVICES))
    if rng.random() < 0.3:  # a global service's task: slot 0, its node in the slot's key
        task.node_id = rng.choice(NODES)
    else:
        task.slot = rng.randint(1, 4)
    task.desired_state = states.RUNNING
    task.status.state = rng.choice([states.NEW, states.ASSIGNED, states.RUNNING, states.FAILED])
    task.status.timestamp = number
    return task


def _change(rng: random.Random, tx: Tx, number: int) -> None:
    """A random change of the kinds the orchestrator, scheduler, agents and the API make."""
    roll = rng.random()
    if roll < 0.05:
        service_id = rng.choice(SERVICES)
        if tx.service(service_id) is not None:
            tx.delete("service", service_id)
        else:
            tx.create(pb.Service(id=service_id))
        return
    tasks = list(tx.view.tasks.all())
    if roll < 0.45 or not tasks:
        tx.create(_task(rng, number))
        return
    victim = rng.choice(tasks).id
    if roll < 0.6:
        tx.delete("task", victim)  # nothing when it was deleted earlier in this transaction
        return
    current = tx.task(victim)
    if current is None:
        return
    task = copy(current)
    if roll < 0.75:
        task.desired_state = rng.choice([states.SHUTDOWN, states.REMOVE])
    else:
        task.status.state = rng.choice([states.RUNNING, states.FAILED, states.COMPLETE])
        if not task.node_id:
            task.node_id = rng.choice(NODES)
    tx.update(task)


async def test_the_slot_index_equals_a_scan_whenever_apply_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random writes (and the reaper's own deletions, every loop turn) leave the index equal to
    a scan of the view each time a write returns: on the watch-fed index it lagged."""
    monkeypatch.setattr(reaper_module, "TICK", 0.0)
    store = await instant_store()
    await store.update(lambda tx: [tx.create(pb.Service(id=s)) for s in SERVICES])
    rng = random.Random(18)
    await store.update(lambda tx: [tx.create(_task(rng, n)) for n in range(40)])
    reaper = TaskReaper(store)
    reaper.start()
    try:
        for _ in range(3):  # the loop's first turns (a watch-fed reaper indexed the view there)
            await asyncio.sleep(0)
        assert reaper.index() == _scan(store), "the index does not start from the view"
        for number in range(300):
            await store.update(
                lambda tx, n=number: [_change(rng, tx, 1000 + n * 10 + k) for k in range(rng.randint(1, 4))]
            )
            assert reaper.index() == _scan(store), f"the index differs from a scan after write {number}"
            if number % 7 == 0:
                await asyncio.sleep(0)  # let the reaper's own rounds commit between writes
    finally:
        await reaper.stop()
    await store.update(lambda tx: tx.create(_task(rng, 99_999)))
    assert "t99999" not in set().union(*reaper.index().values()), "a stopped reaper still follows the store"


async def test_a_snapshot_restore_rebuilds_the_index() -> None:
    store = await instant_store()
    rng = random.Random(7)
    await store.update(lambda tx: [tx.create(_task(rng, n)) for n in range(20)])
    reaper = TaskReaper(store)
    reaper.start()
    try:
        other = await instant_store()
        await other.update(lambda tx: [tx.create(_task(rng, 500 + n)) for n in range(15)])
        store.restore(other.applied_index, other.snapshot())
        assert reaper.index() == _scan(store)
        # Every slot that may hold something to prune: more than one task, or one that may go
        # (a slot holding one live task only has nothing to prune).
        worth = {
            key
            for key, ids in _scan(store).items()
            if len(ids) > 1 or any(reaper_module._may_free(store.view.tasks.get(i)) for i in ids)
        }
        assert reaper._dirty == worth, "the restored view's slots are not the ones looked at"
    finally:
        await reaper.stop()
