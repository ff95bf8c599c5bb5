"""Leading-edge batching (issue 18 item 4): a lone event goes at once, a burst is batched.

Logic tests with a fake clock, and the scheduler driver on an in-process store with its
debounce set to an hour: a task created on an idle cluster must still be placed at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from shoal import states
from shoal.ids import new_id
from shoal.loader import PluginLoader
from shoal.manager import scheduler_driver
from shoal.manager.orchestrator import new_task
from shoal.manager.scheduler_driver import SchedulerDriver
from shoal.pacing import Pacer
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.asyncio
async def test_pacer_sends_a_lone_batch_at_once_and_spaces_a_burst() -> None:
    fake = FakeTime()
    pacer = Pacer(0.1, clock=fake.clock, sleep=fake.sleep)
    await pacer.pace()  # idle: no wait (only a yield)
    assert fake.slept == [0]
    fake.now += 0.03
    await pacer.pace()  # 30 ms after the last batch: held until 100 ms after it
    assert fake.slept[-1] == pytest.approx(0.07)
    await pacer.pace()  # right after: a full interval
    assert fake.slept[-1] == pytest.approx(0.1)
    fake.now += 5
    await pacer.pace()  # quiet again: at once
    assert fake.slept[-1] == 0


@pytest.mark.asyncio
async def test_a_pacer_with_a_burst_lets_a_few_batches_go_at_once_and_then_spaces_them() -> None:
    """issue 18 item 4: the last status update of a small service does not wait out the
    interval of the update before it; a sustained stream is still one batch per interval."""
    fake = FakeTime()
    pacer = Pacer(0.05, clock=fake.clock, sleep=fake.sleep, burst=3)
    for _ in range(3):
        await pacer.pace()
        fake.now += 0.01  # three batches 10 ms apart: none is held back
    assert fake.slept == [0, 0, 0]
    await pacer.pace()  # the fourth: the bucket is empty, it waits for a token to come back
    assert 0 < fake.slept[-1] <= 0.05
    for _ in range(10):  # a sustained stream: one batch per interval
        await pacer.pace()
        assert fake.slept[-1] == pytest.approx(0.05)
    fake.now += 1.0  # quiet: the bucket is full again
    for _ in range(3):
        await pacer.pace()
    assert fake.slept[-3:] == [0, 0, 0]


def test_a_pacer_refuses_a_burst_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Pacer(0.05, burst=0)


@pytest.mark.asyncio
async def test_scheduler_places_a_task_on_an_idle_cluster_without_its_debounce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_driver, "DEBOUNCE", 3600.0)  # a timer here would never end
    monkeypatch.setattr(scheduler_driver, "QUIET", 0.0)  # every event finds the cluster idle
    loader = PluginLoader(selection={"scheduler": "spread"})
    provider = loader.provider("scheduler", loader.make_context("scheduler", tmp_path / "sched"))
    store = ObjectStore()
    store.provider = loader.provider("store", loader.make_context("store", tmp_path / "store"))
    await store.provider.start(store, bootstrap=True)
    driver = SchedulerDriver(store, provider)
    try:
        service = pb.Service(id=new_id(), spec_version=1)
        service.spec.annotations.name = "svc"
        service.spec.replicated.replicas = 3

        def seed(tx: Tx) -> None:
            node = pb.Node(id="node0")
            node.status.state = pb.NodeStatus.READY
            node.description.resources.nano_cpus = 4_000_000_000
            node.description.resources.memory_bytes = 8 << 30
            tx.create(node)
            tx.create(service)

        await store.update(seed)
        driver.start()
        for _ in range(3):  # yields, not a timer: the driver's first tick (nothing pending) runs
            await asyncio.sleep(0)
        assert driver._task is not None and not driver._task.done()

        def create_tasks(tx: Tx) -> None:
            for slot in range(1, 4):
                tx.create(new_task(service, slot))

        with store.watch(["task"]) as watch:
            await store.update(create_tasks)
            async with asyncio.timeout(10):  # before the fix: the hour-long debounce
                while not all(t.status.state == states.ASSIGNED for t in store.view.tasks.all()):
                    await watch.get()
    finally:
        await driver.stop()
        await store.provider.stop()
