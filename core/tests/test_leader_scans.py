"""The leader's periodic work looks at what changed, not at every task of a service (issue 18).

A large service is filled up in pieces without scanning all its tasks for each piece: 100,000
replicas were 200 pieces of 500, each scanning every task of the service and checking every
slot for a rolling update, 85 s of the leader's loop (now 6 s). The task reaper looks only at
the slots that changed: it scanned every task of a changed service every 250 ms."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from shoal import defaults
from shoal.manager import netobjects, orchestrator
from shoal.manager import reaper as reaper_module
from shoal.manager import requests as rq
from shoal.manager.controlapi import ControlAPI
from shoal.manager.orchestrator import ReplicatedOrchestrator
from shoal.manager.reaper import TaskReaper
from shoal.manager.tasks import new_task
from shoal.proto import objects_pb2 as pb
from shoal.store import memory
from shoal.testing.objectstore import instant_store

REPLICAS = 3000


def _service(replicas: int) -> pb.Service:
    service = pb.Service(id="s1")
    service.spec.annotations.name = "web"
    service.spec.replicated.replicas = replicas
    service.spec.task.container.image = "app:1"
    return service


def count_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many tasks ``service_tasks`` has returned (a one-item list, counting up)."""
    scanned = [0]
    for view_class in (memory.ReadView, memory._OverlayView):
        real = view_class.service_tasks

        def counted(self: object, service_id: str, real: object = real) -> list[pb.Task]:
            tasks: list[pb.Task] = real(self, service_id)  # type: ignore[operator]
            scanned[0] += len(tasks)
            return tasks

        monkeypatch.setattr(view_class, "service_tasks", counted)
    return scanned


async def test_pieces_of_a_large_service_do_not_rescan_its_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    store = await instant_store()
    await store.update(lambda tx: tx.create(_service(REPLICAS)))
    scanned = count_scans(monkeypatch)
    orch = ReplicatedOrchestrator(store)
    orch._dirty.add("s1")
    await orch._process()
    tasks = list(store.view.tasks.all())
    assert len(tasks) == REPLICAS and sorted(t.slot for t in tasks) == list(range(1, REPLICAS + 1))
    assert REPLICAS > orchestrator.MAX_CREATES_PER_COMMIT  # it took several pieces
    assert scanned[0] < REPLICAS, f"{scanned[0]} tasks scanned to create {REPLICAS}"


async def test_a_service_changed_while_being_filled_is_reconciled_whole() -> None:
    """Scaled down between two pieces: the pieces stop at the new count."""
    store = await instant_store()
    await store.update(lambda tx: tx.create(_service(REPLICAS)))
    orch = ReplicatedOrchestrator(store)
    orch._dirty.add("s1")
    real_fill = orch._continue_filling
    scaled = [False]

    def scale_first(tx: memory.Tx, service_id: str) -> None:
        if not scaled[0]:  # as if `service scale web=700` committed just before this piece
            scaled[0] = True
            service = memory.copy(tx.service(service_id))  # type: ignore[type-var]
            service.spec.replicated.replicas = 700
            service.meta.version += 1
            tx.update(service)
        real_fill(tx, service_id)

    orch._continue_filling = scale_first  # type: ignore[method-assign]
    await orch._process()
    live = [t for t in store.view.tasks.all() if t.desired_state <= pb.RUNNING]
    assert len(live) == 700


async def test_the_reaper_looks_only_at_the_slots_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    store = await instant_store()
    service = _service(REPLICAS)

    def seed(tx: memory.Tx) -> None:
        cluster = memory.copy(tx.cluster())  # type: ignore[type-var]
        cluster.spec.orchestration.task_history_retention_limit = defaults.TASK_HISTORY_LIMIT
        tx.update(cluster)
        tx.create(service)
        for slot in range(1, REPLICAS + 1):
            tx.create(new_task(service, slot))

    await store.update(seed)
    reaper = TaskReaper(store)
    for task in store.view.tasks.all():  # what its loop does when it starts
        reaper._mark(task)
    await reap_round(store, reaper)

    def history(tx: memory.Tx) -> None:  # slot 7: ten dead tasks besides its live one
        for n in range(10):
            dead = new_task(service, 7)
            dead.desired_state = pb.SHUTDOWN
            dead.status.state = pb.FAILED
            dead.status.timestamp = n
            tx.create(dead)

    await store.update(history)
    for task in store.view.tasks.all():
        if task.slot == 7:
            reaper._mark(task)
    scanned = count_scans(monkeypatch)
    await reap_round(store, reaper)
    slot7 = [t for t in store.view.tasks.all() if t.slot == 7]
    assert len(slot7) == defaults.TASK_HISTORY_LIMIT  # the live task and the 4 newest dead ones
    assert sorted(t.status.timestamp for t in slot7 if t.status.state == pb.FAILED) == [6, 7, 8, 9]
    assert scanned[0] == 0, f"the reaper scanned {scanned[0]} tasks to prune one slot"


async def reap_round(store: memory.ObjectStore, reaper: TaskReaper) -> None:
    """One round of the reaper's loop, without its timer."""
    reaper._backlog.extend(reaper._dirty)
    reaper._dirty.clear()
    await store.update(lambda tx: reaper._reap(tx, reaper._backlog, []))


async def _settle(store: memory.ObjectStore) -> None:
    """Until every watcher took its events and acted on them (loop turns, no timer)."""
    for _ in range(1000):
        if not store._unpublished and all(w.queue.empty() for w in store._watches):
            break
        await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)


async def test_tasks_starting_do_not_make_the_reaper_look_at_their_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each task of a starting service changes state about five times; each change made the
    reaper look at its slot though a task that stays live frees nothing."""
    monkeypatch.setattr(reaper_module, "TICK", 0.0)
    store = await instant_store()
    service = _service(1000)
    await store.update(
        lambda tx: [tx.create(service), *(tx.create(new_task(service, n)) for n in range(1, 1001))]
    )
    reaper = TaskReaper(store)
    looked_at: list[int] = []
    real_reap = reaper._reap

    def counted(
        tx: memory.Tx, backlog: deque[tuple[str, int, str]], taken: list[tuple[str, int, str]]
    ) -> None:
        looked_at.append(len(backlog))
        real_reap(tx, backlog, taken)

    reaper._reap = counted  # type: ignore[method-assign]
    reaper.start()
    try:
        await _settle(store)
        looked_at.clear()
        for state in (pb.ASSIGNED, pb.PREPARING, pb.RUNNING):

            def progress(tx: memory.Tx, state: int = state) -> None:
                for task in tx.view.tasks.all():
                    task = memory.copy(task)
                    task.status.state = state  # type: ignore[assignment]
                    tx.update(task)

            await store.update(progress)
            await _settle(store)
        assert sum(looked_at) == 0, f"the reaper looked at {looked_at} slots for tasks that stayed live"
        stopped = [t for t in store.view.tasks.all() if t.slot <= 3]
        await store.update(lambda tx: [tx.update(_failed(t)) for t in stopped])
        await _settle(store)
        assert sum(looked_at) == 3  # a task that ended: its slot is looked at
    finally:
        await reaper.stop()


def _failed(task: pb.Task) -> pb.Task:
    task = memory.copy(task)
    task.status.state = pb.FAILED
    return task


async def test_removing_a_large_service_is_written_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """``service rm`` of 10,000 replicas was one entry marking 10,000 tasks, then one entry
    deleting them: each applied by every manager in one go. The control API removes only the
    service (it marked every task too: at 100,000 replicas one entry of 100,000 changes, and
    the leader lost its leadership applying it); the orchestrator marks them piece by piece."""
    store = await instant_store()
    service = _service(REPLICAS)
    await store.update(
        lambda tx: [tx.create(service), *(tx.create(new_task(service, n)) for n in range(1, REPLICAS + 1))]
    )
    sizes: list[int] = []
    propose = store.provider.propose  # type: ignore[union-attr]

    async def recorded(entry: bytes) -> int:
        sizes.append(len(pb.StoreBatch.FromString(entry).actions))
        return await propose(entry)

    store.provider.propose = recorded  # type: ignore[method-assign,union-attr]
    await ControlAPI(store, "m1").service_rm(rq.ServiceRefs(refs=["s1"]))
    assert sizes == [1], f"service rm wrote entries of {sizes} changes"
    orch = ReplicatedOrchestrator(store)
    orch._dirty.add("s1")
    scanned = count_scans(monkeypatch)
    await orch._process()
    assert all(t.desired_state == pb.REMOVE for t in store.view.tasks.all())
    assert scanned[0] == 0, f"{scanned[0]} tasks read to list a removed service's tasks"  # its IDs do
    reaper = TaskReaper(store)
    for task in store.view.tasks.all():
        reaper._mark(task)
    while reaper._dirty or reaper._backlog:
        await reap_round(store, reaper)
    assert len(store.view.tasks) == 0
    assert max(sizes) <= orchestrator.MAX_CREATES_PER_COMMIT, f"entries of {sizes} changes"


def test_address_books_skip_tasks_without_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every node registration and placement builds its transaction's address books from every
    task; a task without networks holds no address, and is passed over with one test."""
    checked = [0]
    real = netobjects.task_dead

    def counted(task: pb.Task) -> bool:
        checked[0] += 1
        return real(task)

    monkeypatch.setattr(netobjects, "task_dead", counted)
    service = _service(1000)
    plain = [new_task(service, n) for n in range(1, 1001)]
    attached = new_task(service, 1001)
    attached.networks.add(addresses=["10.0.1.5/24"]).network.id = "net1"
    used = netobjects.used_addresses([*plain, attached], [], [])
    assert used == {"net1": {"10.0.1.5/24"}}
    assert checked[0] == 1, f"{checked[0]} tasks checked for death to find one with an address"
