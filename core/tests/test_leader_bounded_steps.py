"""The leader's steps stay bounded at 100,000 tasks (issue 18).

At 100,000 replicas on 1,000 hollow nodes the leader's loop was held 5.5-8.7 s at a time and
Raft lost the leader: every node marked Down at once asked for 100,000 replacements in one
transaction, ``service rm`` was reaped 500 tasks per 0.25 s tick, the scheduler decided every
pending task in one call, and the orchestrator took in every event queued during a long
reconciliation in one go. These tests count the pieces at a size that runs in a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from shoal import states
from shoal.manager import orchestrator as orchestrator_module
from shoal.manager import reaper as reaper_module
from shoal.manager import scheduler_driver as driver_module
from shoal.manager import tasks as tasks_module
from shoal.manager import updater as updater_module
from shoal.manager.liveslots import LiveSlots
from shoal.manager.nodeload import NodeLoads
from shoal.manager.orchestrator import ReplicatedOrchestrator
from shoal.manager.orchestrator import _runnable_slots_scanned as _scanned
from shoal.manager.reaper import TaskReaper
from shoal.manager.scheduler_driver import SchedulerDriver
from shoal.manager.tasks import new_task
from shoal.proto import objects_pb2 as pb
from shoal.roles.scheduler import NodeInfo, Placement
from shoal.store import memory
from shoal.store import pieces as pieces_module
from shoal.store.memory import Event, ObjectStore, Tx
from shoal.testing.objectstore import RecordingLog, instant_store
from shoal_scheduler_spread.scheduler import SpreadScheduler

NODES = 20
PER_NODE = 100


def _service(replicas: int) -> pb.Service:
    spec = pb.ServiceSpec(replicated=pb.ReplicatedService(replicas=replicas))
    spec.annotations.name = "web"
    spec.task.container.image = "app:1"
    return pb.Service(id="s1", spec=spec)


def _node(number: int) -> pb.Node:
    node = pb.Node(id=f"n{number:03d}")
    node.spec.availability = pb.NodeSpec.ACTIVE
    node.spec.membership = pb.NodeSpec.ACCEPTED
    node.status.state = pb.NodeStatus.READY
    node.description.platform.os = "linux"
    return node


async def _until(condition: Callable[[], bool], seconds: float = 30) -> None:
    """Until ``condition`` holds (a state of the store: no event to wait on); fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _running_cluster() -> tuple[ObjectStore, RecordingLog]:
    """NODES nodes each running PER_NODE tasks of one service."""
    store = await instant_store()
    log = RecordingLog(store)
    store.provider = log  # type: ignore[assignment]
    service = _service(NODES * PER_NODE)

    def seed(tx: Tx) -> None:
        tx.create(service)
        for number in range(NODES):
            tx.create(_node(number))
            for slot in range(number * PER_NODE + 1, (number + 1) * PER_NODE + 1):
                task = new_task(service, slot)
                task.node_id = f"n{number:03d}"
                task.status.state = states.RUNNING
                tx.create(task)

    await store.update(seed)
    log.sizes.clear()
    return store, log


async def test_every_node_down_at_once_replaces_its_tasks_in_bounded_transactions() -> None:
    """1,000 nodes x 100 tasks marked Down together were one transaction of 200,000 changes."""
    store, log = await _running_cluster()

    def all_down(tx: Tx) -> None:
        for node in list(tx.view.nodes.all()):
            node = memory.copy(node)
            node.status.state = pb.NodeStatus.DOWN
            tx.update(node)

    await store.update(all_down)
    orch = ReplicatedOrchestrator(store)
    try:
        await orch._check_tasks_at_start()  # what the nodes' events ask for: every task replaced
        log.sizes.clear()
        await orch._process()
        replacements = [t for t in store.view.tasks.all() if t.desired_state == states.READY]
        assert len(replacements) == NODES * PER_NODE
        assert sorted(t.slot for t in replacements) == list(range(1, NODES * PER_NODE + 1))
        assert max(log.sizes) <= orchestrator_module.MAX_CREATES_PER_COMMIT, f"entries of {log.sizes} changes"
    finally:
        await orch.stop()


async def test_the_orchestrator_takes_in_a_pile_of_events_in_pieces() -> None:
    """Events queued during a long reconciliation (100,000 tasks' creation, placement and
    statuses) were taken in in one stretch of the loop."""
    store = await instant_store()
    orch = ReplicatedOrchestrator(store)
    others_ran = [False]
    seen_before_last: list[bool] = []
    events = [
        Event(memory.UPDATE, "task", pb.Task(id=f"t{n}", service_id="s", desired_state=states.RUNNING))
        for n in range(3 * orchestrator_module.EVENTS_PER_STEP)
    ]
    real = orch._on_event

    def recorded(event: Event) -> None:
        seen_before_last.append(others_ran[0])
        real(event)

    orch._on_event = recorded  # type: ignore[method-assign]

    async def other() -> None:
        others_ran[0] = True

    asyncio.get_running_loop().create_task(other())
    await orch._handle(events)
    assert len(seen_before_last) == len(events)
    assert seen_before_last[-1], "nothing else ran while the events were taken in"


async def test_a_removed_service_is_reaped_round_after_round_without_the_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``service rm`` of 110,000 replicas was reaped 500 tasks per 0.25 s tick: 55 s."""
    tick = 0.0123
    monkeypatch.setattr(reaper_module, "TICK", tick)
    ticks = [0]
    real_sleep = asyncio.sleep

    async def counted_sleep(delay: float, *args: object) -> object:
        if delay == tick:
            ticks[0] += 1
        return await real_sleep(delay, *args)

    monkeypatch.setattr(reaper_module.asyncio, "sleep", counted_sleep)
    store = await instant_store()
    count = 6 * reaper_module.MAX_DELETES_PER_COMMIT

    def removed(tx: Tx) -> None:
        for slot in range(1, count + 1):
            tx.create(pb.Task(id=f"t{slot}", service_id="gone", slot=slot, desired_state=states.REMOVE))

    await store.update(removed)
    reaper = TaskReaper(store)
    reaper.start()
    try:
        await _until(lambda: not store.view.tasks)
        assert ticks[0] == 1, f"{ticks[0]} ticks waited to reap {count} tasks"
    finally:
        await reaper.stop()


async def _pending_tasks(node_state: int) -> ObjectStore:
    """2,000 new tasks of one service and NODES nodes in ``node_state``."""
    store = await instant_store()
    service = _service(2000)

    def seed(tx: Tx) -> None:
        tx.create(service)
        for number in range(NODES):
            node = _node(number)
            node.status.state = node_state  # type: ignore[assignment]
            tx.create(node)
        for slot in range(1, 2001):
            tx.create(new_task(service, slot))

    await store.update(seed)
    return store


async def _tick_recording(store: ObjectStore) -> list[int]:
    """One tick of a driver with the spread scheduler; how many tasks each call asked about."""
    spread = SpreadScheduler()
    calls: list[int] = []

    class Recording:
        async def schedule(
            self, tasks: list[pb.Task], nodes: list[NodeInfo], filters: object = ()
        ) -> list[Placement]:
            calls.append(len(tasks))
            return spread.schedule_sync(tasks, nodes)

    driver = SchedulerDriver(store, Recording())  # type: ignore[arg-type]
    try:
        await driver.tick()
    finally:
        driver.loads.stop()
    return calls


async def test_the_scheduler_decides_and_commits_pending_tasks_piece_by_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100,000 pending tasks were one call of the provider, seconds of the leader's loop; the
    pieces decide exactly what one call would have."""
    monkeypatch.setattr(driver_module, "MAX_PLACEMENTS_PER_COMMIT", 300)
    store = await _pending_tasks(pb.NodeStatus.READY)
    spread = SpreadScheduler()
    whole = spread.schedule_sync(
        sorted(store.view.tasks.all(), key=lambda t: (t.slot, t.id)),
        list(SchedulerDriver(store, spread).loads.node_infos().values()),
    )
    calls = await _tick_recording(store)
    assert max(calls) <= 300 and sum(calls) == 2000, calls
    assert {t.id: t.node_id for t in store.view.tasks.all()} == {p.task_id: p.node_id for p in whole}


async def test_a_piece_of_new_tasks_copies_one_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new task was built field by field from the service (new_task 9.6% of the
    leader's samples at 100,000 replicas); a piece now copies one template per service."""
    made = [0]
    real = tasks_module.task_template

    def counted(service: pb.Service, desired: int = states.RUNNING) -> pb.Task:
        made[0] += 1
        return real(service, desired)

    monkeypatch.setattr(orchestrator_module, "task_template", counted)
    store = await instant_store()
    await store.update(lambda tx: tx.create(_service(1200)))
    orch = ReplicatedOrchestrator(store)
    orch._dirty.add("s1")
    await orch._process()
    assert len(store.view.tasks) == 1200
    assert made[0] == 3  # one per piece of MAX_CREATES_PER_COMMIT
    one = next(iter(store.view.tasks.all()))
    assert one.annotations.name == f"web.{one.slot}" and one.status.message == "created"
    assert one.spec.container.image == "app:1" and one.desired_state == states.RUNNING


async def test_a_group_that_fits_nowhere_is_not_asked_about_piece_after_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every node down with 100,000 tasks pending: each tick asked the provider about every
    one of them, 500 at a time, each piece a pass over every node."""
    monkeypatch.setattr(driver_module, "MAX_PLACEMENTS_PER_COMMIT", 300)
    store = await _pending_tasks(pb.NodeStatus.DOWN)
    calls = await _tick_recording(store)
    assert calls == [300], calls
    errors = {t.status.err for t in store.view.tasks.all()}
    assert {t.status.state for t in store.view.tasks.all()} == {states.PENDING}
    assert len(errors) == 1 and "not available" in next(iter(errors)), errors


async def test_a_new_leaders_indexes_are_built_in_pieces_and_follow_the_applies_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new leader over 100,000 tasks counted them for the scheduler and indexed them for
    the reaper in one step each (about a second of its loop together). In pieces, what
    changes meanwhile ends up exactly as a count from scratch would have it."""
    monkeypatch.setattr(pieces_module, "INDEXED_PER_STEP", 150)
    monkeypatch.setattr(reaper_module, "INDEXED_PER_STEP", 150)
    store, _ = await _running_cluster()
    loads, reaper = NodeLoads(store), TaskReaper(store)
    counting = asyncio.ensure_future(loads.start_in_pieces())
    indexing = asyncio.ensure_future(reaper._index_in_pieces())
    steps = 0
    while not (counting.done() and indexing.done()):
        steps += 1
        moved = sorted(store.view.tasks.items)[steps * 7 % (NODES * PER_NODE)]

        def change(tx: Tx, task_id: str = moved, step: int = steps) -> None:
            task = memory.copy(tx.task(task_id))  # type: ignore[type-var]
            if step % 3 == 0:
                tx.delete("task", task_id)
                return
            task.node_id = f"n{step % NODES:03d}"
            task.status.state = states.FAILED if step % 3 == 1 else states.PENDING
            tx.update(task)

        await store.update(change)
    assert steps > 3, "counted in one step"
    fresh_loads, fresh_reaper = NodeLoads(store), TaskReaper(store)
    fresh_loads.restored()
    fresh_reaper.restored()
    assert loads._loads == fresh_loads._loads and loads._unassigned == fresh_loads._unassigned
    assert reaper.index() == fresh_reaper.index()
    loads.stop()
    await reaper.stop()


async def test_a_new_leaders_orchestrator_checks_the_tasks_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orchestrator_module, "CHECKED_PER_STEP", 150)
    store, _ = await _running_cluster()
    orch = ReplicatedOrchestrator(store)
    others_ran = [0]

    async def other() -> None:
        while True:
            others_ran[0] += 1
            await asyncio.sleep(0)

    running = asyncio.ensure_future(other())
    try:
        await orch._check_tasks_at_start()
    finally:
        running.cancel()
        await orch.stop()
    assert others_ran[0] >= 3, f"the loop ran something else {others_ran[0]} times during the check"


async def test_a_service_at_its_count_is_reconciled_without_grouping_its_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scale or a new leader's first reconciliation looked every task of the service up
    through the transaction and grouped it by slot, and the rolling-update check grouped
    them again: half a second each at 100,000 replicas."""
    store, _ = await _running_cluster()
    looked_up, keyed = [0], [0]
    real_get, real_key = memory.Tx.get, updater_module.slot_key

    def counted_get(self: memory.Tx, kind: str, object_id: str) -> object:
        looked_up[0] += kind == "task"
        return real_get(self, kind, object_id)

    def counted_key(task: pb.Task) -> tuple[int, str]:
        keyed[0] += 1
        return real_key(task)

    monkeypatch.setattr(memory.Tx, "get", counted_get)
    monkeypatch.setattr(updater_module, "slot_key", counted_key)
    orch = ReplicatedOrchestrator(store)
    orch._dirty.add("s1")
    try:
        await orch._process()
    finally:
        await orch.stop()
    assert len(store.view.tasks) == NODES * PER_NODE  # nothing to do
    assert looked_up[0] == 0 and keyed[0] == 0, (looked_up, keyed)


async def test_a_scale_reads_the_live_slots_kept_as_the_store_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scale of a 100,000-replica service read every task of it twice (the slots wanted
    running, and whether any slot needs a rolling update): a few hundred ms of the loop."""
    store, _ = await _running_cluster()
    scanned = [0]
    for view_class in (memory.ReadView, memory._OverlayView):
        real = view_class.service_tasks

        def counted(self: object, service_id: str, real: Any = real) -> list[pb.Task]:
            tasks: list[pb.Task] = real(self, service_id)
            scanned[0] += len(tasks)
            return tasks

        monkeypatch.setattr(view_class, "service_tasks", counted)
    orch = ReplicatedOrchestrator(store)
    orch.start()
    try:
        await _until(lambda: orch.live.ready)
        scanned[0] = 0

        def scale(tx: Tx) -> None:
            service = memory.copy(tx.service("s1"))  # type: ignore[type-var]
            service.spec.replicated.replicas = NODES * PER_NODE + 100
            tx.update(service)

        await store.update(scale)
        await _until(lambda: len(store.view.tasks) == NODES * PER_NODE + 100)
        new_slots = sorted(t.slot for t in store.view.tasks.all() if t.slot > NODES * PER_NODE)
        assert new_slots == list(range(NODES * PER_NODE + 1, NODES * PER_NODE + 101))
        assert scanned[0] == 0, f"{scanned[0]} tasks scanned for a scale"
    finally:
        await orch.stop()


async def test_live_slots_under_a_group_and_a_transaction_match_a_scan() -> None:
    """What the index answers for a transaction (committed view, the group's changes before
    it, its own) is what a pass over the service's tasks finds."""
    store, _ = await _running_cluster()
    live = LiveSlots(store)
    await live.start_in_pieces()
    orch = ReplicatedOrchestrator(store)
    orch.live = live
    answers: list[tuple[set[int], set[int]]] = []

    def first(tx: Tx) -> None:  # a transaction before in the group: ends slot 1, starts slot 9999
        task = memory.copy(tx.view.service_tasks("s1")[0])
        task.desired_state = states.SHUTDOWN
        tx.update(task)
        tx.create(new_task(store.view.services.get("s1"), 9999))  # type: ignore[arg-type]

    def second(tx: Tx) -> None:
        victim = memory.copy(tx.view.service_tasks("s1")[5])
        tx.delete("task", victim.id)
        tx.create(new_task(store.view.services.get("s1"), 8888))  # type: ignore[arg-type]
        answers.append((orch._runnable_slots(tx, "s1"), _scanned(tx, "s1")))

    await asyncio.gather(store.update(lambda tx: None), store.update(first), store.update(second))
    ((indexed, scanned),) = answers
    assert indexed == scanned and 9999 in indexed and 8888 in indexed
    live.stop()
    await orch.stop()
