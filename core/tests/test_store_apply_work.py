"""The work each applied change costs every manager (issue 18): a task's status change on its
way to RUNNING (four of every started task's five changes) moves no index entry and no node
total, and a watch's queue is a plain FIFO."""

from __future__ import annotations

import asyncio

import pytest
from shoal import states
from shoal.manager import nodeload
from shoal.manager.nodeload import NodeLoads
from shoal.manager.reaper import TaskReaper
from shoal.proto import objects_pb2 as pb
from shoal.store import memory
from shoal.store.memory import Event, EventQueue, ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store

TASKS = 200


async def _placed_tasks() -> ObjectStore:
    """TASKS tasks ASSIGNED to 10 nodes, each reserving CPU and memory."""
    store = await instant_store()

    def create(tx: Tx) -> None:
        for number in range(TASKS):
            task = pb.Task(id=f"t{number}", service_id="s", slot=number + 1, node_id=f"n{number % 10}")
            task.desired_state = states.RUNNING
            task.status.state = states.ASSIGNED
            task.spec.resources.reservations.nano_cpus = 10_000_000
            task.spec.resources.reservations.memory_bytes = 1 << 20
            tx.create(task)

    await store.update(create)
    return store


async def _advance(store: ObjectStore, state: int) -> None:
    def advance(tx: Tx) -> None:
        for number in range(TASKS):
            task = copy(tx.task(f"t{number}"))  # type: ignore[type-var]
            task.status.state = state  # type: ignore[assignment]
            tx.update(task)

    await store.update(advance)


async def test_a_status_change_moves_no_task_index_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    store = await _placed_tasks()
    moves: list[tuple[str, str]] = []
    add, discard = memory._index_add, memory._index_discard
    monkeypatch.setattr(memory, "_index_add", lambda i, k, o: (moves.append(("in", k)), add(i, k, o))[1])
    monkeypatch.setattr(
        memory, "_index_discard", lambda i, k, o: (moves.append(("out", k)), discard(i, k, o))[1]
    )
    for state in (states.ACCEPTED, states.PREPARING, states.STARTING, states.RUNNING):
        await _advance(store, state)
    assert moves == []  # before: one out and one in per change (1,600)
    assert len(store.view.node_tasks("n3")) == TASKS // 10

    def move(tx: Tx) -> None:  # a change of node still moves the entry
        task = copy(tx.task("t3"))  # type: ignore[type-var]
        task.node_id = "n4"
        tx.update(task)

    await store.update(move)
    assert moves == [("out", "n3"), ("in", "n4")]  # the service's entry stays (it was moved too)
    assert "t3" in {t.id for t in store.view.node_tasks("n4")}
    assert "t3" not in {t.id for t in store.view.node_tasks("n3")}
    assert "t3" in {t.id for t in store.view.service_tasks("s")}

    def other_service(tx: Tx) -> None:  # a change of service moves both
        task = copy(tx.task("t3"))  # type: ignore[type-var]
        task.service_id = "s2"
        tx.update(task)

    moves.clear()
    await store.update(other_service)
    assert moves == [("out", "s"), ("out", "n4"), ("in", "s2"), ("in", "n4")]
    assert [t.id for t in store.view.service_tasks("s2")] == ["t3"]
    assert "t3" not in {t.id for t in store.view.service_tasks("s")}


async def test_a_status_change_leaves_the_node_totals_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    store = await _placed_tasks()
    loads = NodeLoads(store)
    loads.start()
    counted: list[int] = []
    made: list[int] = []
    change, init = nodeload._Load.change, nodeload._Load.__init__
    monkeypatch.setattr(
        nodeload._Load, "change", lambda load, t, sign: (counted.append(sign), change(load, t, sign))[1]
    )

    def making(load: nodeload._Load, *args: object, **kwargs: object) -> None:
        made.append(1)
        init(load, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(nodeload._Load, "__init__", making)
    for state in (states.ACCEPTED, states.PREPARING, states.STARTING, states.RUNNING):
        await _advance(store, state)
    assert counted == []  # before: counted out and in again, 1,600 times
    assert made == []  # before: a spare _Load (two Counters) made per change counted in
    assert loads._loads["n3"].total_tasks == TASKS // 10
    await _advance(store, states.FAILED)  # the tasks stop occupying their nodes
    assert counted == [-1] * TASKS
    assert loads._loads == {}


async def test_the_event_queue_is_a_fifo_whose_getters_wait_and_may_be_cancelled() -> None:
    queue = EventQueue()
    events = [Event(pb.StoreAction.UPDATE, "task", pb.Task(id=f"t{n}")) for n in range(3)]
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(events[0])
    assert await waiting is events[0]

    # A getter woken and then cancelled passes its wake-up on: the event is not stranded.
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(events[1])
    first.cancel()
    assert await second is events[1]
    assert first.cancelled()

    queue.put_nowait(events[2])
    queue.put_nowait(events[0])
    assert queue.qsize() == 2 and not queue.empty()
    assert queue.get_nowait() is events[2]
    assert queue.take_all() == [events[0]]
    assert queue.empty()


async def test_a_status_change_builds_no_slot_key_for_the_reaper(monkeypatch: pytest.MonkeyPatch) -> None:
    store = await _placed_tasks()
    reaper = TaskReaper(store)
    reaper.restored()
    store.listen(reaper)
    keys: list[str] = []
    slot_of = TaskReaper._slot_of
    monkeypatch.setattr(TaskReaper, "_slot_of", staticmethod(lambda t: (keys.append(t.id), slot_of(t))[1]))
    for state in (states.ACCEPTED, states.PREPARING, states.STARTING, states.RUNNING):
        await _advance(store, state)
    assert keys == []  # before: two keys built and compared per change (1,600)
    await _advance(store, states.FAILED)  # a task ending frees history: its slot is looked at
    assert len(keys) == TASKS


async def test_the_reaper_does_not_look_at_a_new_replicas_slot_alone_in_it() -> None:
    store = await instant_store()
    reaper = TaskReaper(store)
    reaper.restored()
    store.listen(reaper)
    await store.update(lambda tx: tx.create(pb.Service(id="s")))
    reaper._dirty.clear()

    def create(tx: Tx) -> None:
        for number in range(TASKS):
            task = pb.Task(id=f"t{number}", service_id="s", slot=number + 1, desired_state=states.RUNNING)
            tx.create(task)

    await store.update(create)
    assert reaper._dirty == set()  # before: every new slot, looked at in the next round
    replacement = pb.Task(id="r1", service_id="s", slot=1, desired_state=states.RUNNING)
    await store.update(lambda tx: tx.create(replacement))  # a second task in a slot: history
    assert reaper._dirty == {("s", 1, "")}
