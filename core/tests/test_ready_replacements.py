"""No replacement stays at desired READY for good (issue 18).

A replacement is created desired READY and promoted to RUNNING by the restart supervisor once
its restart delay has passed and its old task stopped (or that task's node is down or gone, or
a minute passed). After a drain of 100 of 1,000 hollow nodes under load, 86 replacements stayed
READY for minutes: every way a replacement can lose the one timer that would start it is here,
on the real orchestrator, restart supervisor and updater over a store that commits at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from shoal import states
from shoal.manager import restarts
from shoal.manager.orchestrator import ReplicatedOrchestrator
from shoal.proto import objects_pb2 as pb
from shoal.roles.store import StoreUnavailable
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store

DEADLINE = 10.0


async def until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after DEADLINE."""
    give_up = time.monotonic() + DEADLINE
    while not (value := condition()):
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return value


def _service(delay: float) -> pb.Service:
    service = pb.Service(id="s1", spec_version=1)
    service.spec.annotations.name = "web"
    service.spec.replicated.replicas = 1
    service.spec.task.container.image = "app:1"
    service.spec.task.restart.condition = pb.RestartPolicy.ANY
    service.spec.task.restart.delay = delay
    return service


def _node(node_id: str) -> pb.Node:
    node = pb.Node(id=node_id)
    node.status.state = pb.NodeStatus.READY
    node.spec.availability = pb.NodeSpec.ACTIVE
    return node


def _task(task_id: str, service: pb.Service, node_id: str, desired: int, state: int) -> pb.Task:
    task = pb.Task(
        id=task_id, service_id=service.id, slot=1, node_id=node_id, spec_version=service.spec_version
    )
    task.spec.CopyFrom(service.spec.task)
    task.desired_state = desired  # type: ignore[assignment]
    task.status.state = state  # type: ignore[assignment]
    task.status.timestamp = time.time()
    return task


async def _seed(delay: float, *tasks: pb.Task) -> ObjectStore:
    store = await instant_store()
    service = _service(delay)

    def seed(tx: Tx) -> None:
        tx.create(service)
        for node_id in ("n1", "n2"):
            tx.create(_node(node_id))
        for task in tasks or [_task("t1", service, "n1", states.RUNNING, states.RUNNING)]:
            tx.create(task)

    await store.update(seed)
    return store


async def _change(store: ObjectStore, kind: str, obj_id: str, edit: Callable[[Any], None]) -> None:
    def change(tx: Tx) -> None:
        obj = copy(getattr(tx, kind)(obj_id))
        edit(obj)
        tx.update(obj)

    await store.update(change)


def _set_node_state(state: int) -> Callable[[pb.Node], None]:
    def edit(node: pb.Node) -> None:
        node.status.state = state  # type: ignore[assignment]

    return edit


async def _started(store: ObjectStore, task_id: str, what: str) -> None:
    def started() -> bool:
        task = store.view.tasks.get(task_id)
        return task is not None and task.desired_state == states.RUNNING

    await until(started, what)


def _replacements(store: ObjectStore) -> list[pb.Task]:
    return [t for t in store.view.tasks.all() if t.id != "t1" and t.desired_state <= states.RUNNING]


def _refuse_a_write(store: ObjectStore, after: int = 0) -> list[int]:
    """The store's commit after the next ``after`` ones fails as a leader's does under load
    ("too much uncommitted data"); returns a one-item list counting the refusals."""
    provider: Any = store.provider
    real = provider.propose
    refused = [0]
    passed = [0]

    async def propose(entry: bytes) -> int:
        if passed[0] < after:
            passed[0] += 1
        elif not refused[0]:
            refused[0] += 1
            raise StoreUnavailable("the write was refused: too much uncommitted data; retry it")
        return int(await real(entry))

    provider.propose = propose
    return refused


@pytest.fixture
async def gate(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[asyncio.Event]:
    """Restart delays end when the test sets this event (not after a time)."""
    event = asyncio.Event()

    async def gated(self: restarts.RestartSupervisor, delay: float) -> None:
        await event.wait()

    monkeypatch.setattr(restarts.RestartSupervisor, "_sleep", gated, raising=False)
    yield event


async def _orchestrator(store: ObjectStore) -> ReplicatedOrchestrator:
    orch = ReplicatedOrchestrator(store)
    orch.start()
    return orch


async def test_a_replacement_whose_node_went_down_and_came_back_in_its_delay_starts(
    gate: asyncio.Event,
) -> None:
    """Its node's going down asked for a restart, deferred to the end of its delay; the node
    was back by then, so nothing was restarted, and nothing started it either."""
    store = await _seed(2.0)
    orch = await _orchestrator(store)
    try:
        await _change(store, "node", "n1", _set_node_state(pb.NodeStatus.DOWN))
        (replacement,) = await until(lambda: _replacements(store), "a replacement of t1")
        assert replacement.desired_state == states.READY

        def assigned(task: pb.Task) -> None:
            task.node_id = "n2"
            task.status.state = states.ASSIGNED

        await _change(store, "task", replacement.id, assigned)
        await _change(store, "node", "n2", _set_node_state(pb.NodeStatus.DOWN))
        await until(
            lambda: replacement.id in orch.restarts._deferred, "the restart deferred to the delay's end"
        )
        await _change(store, "node", "n2", _set_node_state(pb.NodeStatus.READY))
        gate.set()
        await _started(store, replacement.id, "the replacement started on its node, back up")
        assert [t.id for t in _replacements(store)] == [replacement.id]
    finally:
        await orch.stop()


async def test_a_promotion_the_store_refused_is_tried_again(gate: asyncio.Event) -> None:
    store = await _seed(2.0)
    orch = await _orchestrator(store)
    try:
        await _change(store, "node", "n1", _set_node_state(pb.NodeStatus.DOWN))
        (replacement,) = await until(lambda: _replacements(store), "a replacement of t1")
        refused = _refuse_a_write(store)
        gate.set()
        await _started(store, replacement.id, "the replacement started after its refused promotion")
        assert refused == [1]
    finally:
        await orch.stop()


async def test_a_node_down_the_store_refused_to_act_on_is_acted_on_again() -> None:
    """The orchestrator's write replacing a lost node's tasks failed: the node's event came
    once, so the tasks stayed desired RUNNING on a Down node (the slot never refilled)."""
    store = await _seed(0.0)
    orch = await _orchestrator(store)
    try:
        await until(lambda: orch._loop_task is not None and not orch._dirty, "the orchestrator idle")
        refused = _refuse_a_write(store, after=1)  # not the node's going down: what follows it
        await _change(store, "node", "n1", _set_node_state(pb.NodeStatus.DOWN))
        (replacement,) = await until(lambda: _replacements(store), "a replacement of t1 after the refusal")
        assert refused == [1]
        await _started(store, replacement.id, "the replacement started")
    finally:
        await orch.stop()


@pytest.mark.parametrize("old_node", ["ready", "down", "gone", "silent"])
async def test_a_new_leader_starts_what_an_earlier_one_left_ready(
    old_node: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replacement the previous leader created (its timer died with that leader), applied
    after this leader's orchestrator started: started once what is left of its restart delay
    has passed and its old task stopped; not waited for when that task's node is down or gone,
    nor beyond OLD_TASK_TIMEOUT when the node is up but never reports."""
    if old_node == "silent":
        monkeypatch.setattr(restarts, "OLD_TASK_TIMEOUT", 0.3)
    store = await _seed(30.0)
    orch = await _orchestrator(store)
    try:
        await until(lambda: orch._loop_task is not None and not orch._dirty, "the orchestrator idle")
        service = store.view.services.get("s1")
        assert service is not None
        replacement = _task("r1", service, "", states.READY, states.NEW)
        replacement.status.timestamp = time.time() - 60  # its restart delay is over

        def earlier_leader(tx: Tx) -> None:
            old = copy(tx.task("t1"))
            assert old is not None
            old.desired_state = states.SHUTDOWN
            tx.update(old)
            tx.create(replacement)
            if old_node == "down":
                node = copy(tx.node("n1"))
                assert node is not None
                node.status.state = pb.NodeStatus.DOWN
                tx.update(node)
            elif old_node == "gone":
                tx.delete("node", "n1")

        await store.update(earlier_leader)

        def started() -> bool:
            task = store.view.tasks.get("r1")
            return task is not None and task.desired_state == states.RUNNING

        if old_node == "ready":
            await until(lambda: "r1" in orch.restarts.pending_starts(), "the left-over replacement adopted")
            for _ in range(50):
                await asyncio.sleep(0)
            assert not started(), "started while its old task still runs on a node that is up"

            def stopped(task: pb.Task) -> None:
                task.status.state = states.SHUTDOWN

            await _change(store, "task", "t1", stopped)
        await until(started, "the left-over replacement started")
    finally:
        await orch.stop()


def _bump(edit: Callable[[pb.Service], None]) -> Callable[[pb.Service], None]:
    def change(service: pb.Service) -> None:
        edit(service)
        service.spec_version += 1

    return change


def _new_image(service: pb.Service) -> None:
    service.spec.task.container.image = "app:2"


def _stopped(task: pb.Task) -> None:
    task.status.state = states.SHUTDOWN


def _update_workers() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "Updater._worker"]  # type: ignore[union-attr]


async def _updating() -> tuple[ObjectStore, ReplicatedOrchestrator, pb.Task]:
    """A rolling update (a new image) under way: its new task created READY, the old one
    shut down but still running."""
    store = await _seed(0.0)
    orch = await _orchestrator(store)
    await until(lambda: orch._loop_task is not None and not orch._dirty, "the orchestrator idle")
    await _change(store, "service", "s1", _bump(_new_image))
    (new,) = await until(lambda: _replacements(store), "the update's new task")
    return store, orch, new


async def test_a_ready_task_of_a_cancelled_rolling_update_starts() -> None:
    """An update creates the slot's new task READY and waits for the old one to stop; a newer
    spec (a label) cancels it and, finding the READY task clean, does not take the slot up.
    The cancelled update's workers stop (they went on for a spec that was gone) and the
    restart supervisor starts the READY task once the old one stopped."""
    store, orch, new = await _updating()
    try:
        assert new.desired_state == states.READY and new.spec.container.image == "app:2"
        first = orch.updates.updaters["s1"]
        await _change(store, "service", "s1", _bump(lambda s: s.spec.annotations.labels.update({"a": "b"})))
        await until(lambda: first.task is not None and first.task.done(), "the first update cancelled")
        assert not _update_workers(), "the cancelled update's workers still run"
        await _change(store, "task", "t1", _stopped)
        await _started(store, new.id, "the cancelled update's task started")
    finally:
        await orch.stop()


async def test_a_rolling_update_promotion_the_store_refused_is_tried_again() -> None:
    store, orch, new = await _updating()
    try:
        refused = _refuse_a_write(store, after=1)  # not the old task's stop: the promotion after it
        await _change(store, "task", "t1", _stopped)
        await _started(store, new.id, "the update's task started after its refused promotion")
        assert refused == [1]
    finally:
        await orch.stop()
