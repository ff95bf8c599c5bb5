"""When the scheduler waits before a tick (``SchedulerDriver._settle``), issue 18 item 4.

A few new tasks right after a tick are placed at once: any tick, even one with nothing to
place, used to make them wait for the debounce (55-90 ms for the next ``service create`` of
4 replicas on a cluster whose tasks had just reported). A stream of many new tasks, and tasks
the last tick could not place, are still debounced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from shoal import states
from shoal.manager import scheduler_driver
from shoal.manager.scheduler_driver import DEBOUNCE, FEW_PENDING, SchedulerDriver
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx
from shoal.testing.objectstore import instant_store
from shoal_scheduler_spread import SpreadScheduler


def _new_tasks(tx: Tx, service_id: str, count: int) -> None:
    for slot in range(1, count + 1):
        task = pb.Task(id=f"{service_id}.{slot}", service_id=service_id, slot=slot)
        task.desired_state = states.RUNNING
        task.status.state = states.NEW
        tx.create(task)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The delays the driver sleeps for (each still yields to the loop, at once)."""
    asked: list[float] = []
    real_sleep = scheduler_driver.asyncio.sleep

    async def recorded(delay: float) -> None:
        asked.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(scheduler_driver.asyncio, "sleep", recorded)
    yield asked


async def _driver() -> tuple[ObjectStore, SchedulerDriver]:
    store = await instant_store()
    driver = SchedulerDriver(store, SpreadScheduler())
    driver.loads.start()
    return store, driver


async def test_a_few_new_tasks_just_after_a_tick_are_placed_without_the_debounce(
    sleeps: list[float],
) -> None:
    store, driver = await _driver()
    with store.watch(["task", "node"]) as watch:
        await store.update(lambda tx: _new_tasks(tx, "small", 4))
        await watch.get()
        await driver._settle(watch, last_tick=time.monotonic(), left=0)
    assert DEBOUNCE not in sleeps  # before: the tick a moment ago made it debounce


async def test_many_new_tasks_just_after_a_tick_are_still_debounced(sleeps: list[float]) -> None:
    store, driver = await _driver()
    with store.watch(["task", "node"]) as watch:
        await store.update(lambda tx: _new_tasks(tx, "big", FEW_PENDING))
        await watch.get()
        await driver._settle(watch, last_tick=time.monotonic(), left=0)
    assert DEBOUNCE in sleeps


async def test_tasks_the_last_tick_left_pending_are_still_debounced(sleeps: list[float]) -> None:
    store, driver = await _driver()
    await store.update(lambda tx: _new_tasks(tx, "unplaced", 1))
    with store.watch(["task", "node"]) as watch:
        await store.update(lambda tx: _new_tasks(tx, "small", 2))
        await watch.get()
        await driver._settle(watch, last_tick=time.monotonic(), left=1)
    assert DEBOUNCE in sleeps


async def test_after_a_quiet_spell_the_first_event_ticks_at_once(sleeps: list[float]) -> None:
    store, driver = await _driver()
    with store.watch(["task", "node"]) as watch:
        await store.update(lambda tx: _new_tasks(tx, "big", FEW_PENDING))
        await watch.get()
        await driver._settle(watch, last_tick=time.monotonic() - 2 * DEBOUNCE, left=0)
    assert DEBOUNCE not in sleeps
