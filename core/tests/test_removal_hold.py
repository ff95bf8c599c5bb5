"""A big service's removal reports its tasks' stops in batches (issue 18).

``service rm`` of 100,000 replicas on 1,000 nodes cost one UpdateTaskStatus call per task: the
leader let an agent hold only the reports of tasks starting, never those of tasks told to stop,
and the agent held nothing past RUNNING. Now the leader allows the hold for tasks being removed
(desired REMOVE: ``service rm``, a scale down) while their service has many left to stop, and
the agent holds their SHUTDOWN; a task told to SHUTDOWN (a rolling update, a restart, a drain),
a small service's and the last ones are reported at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shoal import states
from shoal.agent import agent as agent_module
from shoal.manager import dispatcher as dispatcher_module
from shoal.manager import orchestrator as orchestrator_module
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.servicecounts import ServiceTaskCounts
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.cluster import InProcessCluster
from shoal.testing.dispatchprobe import (
    Holds,
    StatusCalls,
    next_task_ids,
    opened,
    report_within_ms,
    until,
    updates,
)
from shoal.testing.objectstore import instant_store
from shoal.testing.stubmanager import StubManager, assigned_task, stub_agent
from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.runtime import FakeRuntime

#: Tasks a service must have left to stop for their reports to be held (made small here).
STOPPING = 6
DEADLINE = 40.0


def _task(service_id: str, index: int, *, desired: int, state: int) -> pb.Task:
    task = pb.Task(id=f"{service_id}-{index}", service_id=service_id, node_id="n1", slot=index + 1)
    task.desired_state = desired  # type: ignore[assignment]
    task.status.state = state  # type: ignore[assignment]
    return task


async def test_the_dispatcher_holds_a_removal_only_while_many_tasks_are_left_to_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatcher_module, "HOLD_MIN_STOPPING", STOPPING)
    store = await instant_store()
    running, remove = states.RUNNING, states.REMOVE
    # A removed service (gone from the store) whose tasks are being marked: 2 marked, 6 not yet.
    removed = [_task("removed", i, desired=remove if i < 2 else running, state=running) for i in range(8)]
    # A scale down of a live service: 7 marked for removal, 3 kept.
    scaled = [_task("scaled", i, desired=remove if i < 7 else running, state=running) for i in range(10)]
    # A small service removed, and a service being updated (its old tasks told to SHUTDOWN).
    small = [_task("small", i, desired=remove, state=running) for i in range(2)]
    updated = [_task("updated", i, desired=states.SHUTDOWN, state=running) for i in range(10)]
    services = [pb.Service(id=name) for name in ("scaled", "updated")]
    for service in services:
        service.spec.replicated.replicas = 3

    def create(tx: Tx) -> None:
        for item in (*services, *removed, *scaled, *small, *updated):
            tx.create(item)

    await store.update(create)
    dispatcher = Dispatcher(store, "c1", lambda: [])
    hold = dispatcher_module.REPORT_HOLD_MS
    assert report_within_ms(dispatcher, updates(*removed[:2])) == hold, "a removed service, marked in pieces"
    assert report_within_ms(dispatcher, updates(scaled[0], scaled[1])) == hold, "a big scale down"
    assert report_within_ms(dispatcher, updates(small[0])) == 0, "a small service removed"
    assert report_within_ms(dispatcher, updates(updated[0])) == 0, "an update's (or a restart's) stop"
    assert report_within_ms(dispatcher, updates(scaled[0], small[0])) == 0, "one waited for: none held"

    def stop_them(tx: Tx) -> None:  # the scale down's tasks stop but two: its last ones
        for task in scaled[:5]:
            stopped = pb.Task()
            stopped.CopyFrom(tx.task(task.id))
            stopped.status.state = states.SHUTDOWN
            tx.update(stopped)

    await store.update(stop_them)
    assert report_within_ms(dispatcher, updates(scaled[5])) == 0, "the last ones"


async def test_an_agent_holds_the_stops_it_is_allowed_to_hold(tmp_path: Path) -> None:
    """Tasks asked down one message at a time, 30 ms apart, with a hold of a minute: their
    SHUTDOWN reports wait (they went one call per message, 15 calls for 15 tasks); a report
    that goes for another reason (here the hold's end, made short) carries them all."""
    tasks = [assigned_task("n1", index) for index in range(15)]
    manager = StubManager(tasks, per_message=1, gap=0.03, stop_hold_ms=1_500)
    agent = stub_agent(manager, tmp_path, FakeRuntime(FakeOptions()), "n1")
    await agent.start()
    try:
        manager.go.set()
        await asyncio.wait_for(manager.all_running.wait(), DEADLINE)
        before = len(manager.reports)
        manager.stop.set()
        await asyncio.wait_for(manager.all_down.wait(), DEADLINE)
        await until(lambda: agent.tasks_held == 0, "every task removed")
        stop_calls = len(manager.reports) - before
    finally:
        await agent.stop()
    assert stop_calls <= 3, stop_calls


async def test_a_failed_task_told_to_stop_is_not_held() -> None:
    """Only a stop is held: a task wanted running that fails, or a stop that failed, goes at once."""
    _held = agent_module._held
    stopping = pb.Task(desired_state=states.REMOVE)
    wanted = pb.Task(desired_state=states.RUNNING)
    assert _held(stopping, pb.TaskStatus(state=states.SHUTDOWN))
    assert _held(stopping, pb.TaskStatus(state=states.COMPLETE))
    assert not _held(stopping, pb.TaskStatus(state=states.FAILED))
    assert not _held(wanted, pb.TaskStatus(state=states.COMPLETE))
    assert not _held(wanted, pb.TaskStatus(state=states.FAILED))
    assert _held(wanted, pb.TaskStatus(state=states.RUNNING))


async def test_removing_a_big_service_reports_its_stops_in_few_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``service rm`` of a big service whose tasks are marked a few per transaction (as 500 of
    100,000 are): each SHUTDOWN was about a call of its own; now they go together, and a small
    service's removal is not held."""
    monkeypatch.setattr(dispatcher_module, "HOLD_MIN_STOPPING", STOPPING)
    monkeypatch.setattr(orchestrator_module, "MAX_CREATES_PER_COMMIT", 2)
    monkeypatch.setattr(dispatcher_module, "ASSIGNMENT_DEBOUNCE", 0.0)
    holds = Holds(monkeypatch)
    replicas = 5 * STOPPING
    async with InProcessCluster(tmp_path, managers=1, workers=1) as cluster:
        await cluster.call("service.create", name="small", image="small:1", replicas=STOPPING - 2)
        await cluster.call("service.create", name="big", image="big:1", replicas=replicas)
        await cluster.wait_for_running("big", replicas, deadline=DEADLINE)
        await cluster.wait_for_running("small", STOPPING - 2, deadline=DEADLINE)
        holds.by_image.clear()
        calls = StatusCalls(monkeypatch)
        agents = [node.daemon.agent for node in cluster.nodes if node.daemon.agent is not None]

        def held() -> int:
            return sum(agent.tasks_held for agent in agents)

        await cluster.call("service.rm", services=["big"])
        await until(lambda: held() == STOPPING - 2, "every task of big removed from its node")
        removal_calls, removal_updates = calls.calls, calls.updates
        await cluster.call("service.rm", services=["small"])
        await until(lambda: held() == 0, "every task of small removed from its node")
    assert removal_updates >= replicas, (removal_calls, removal_updates)  # every SHUTDOWN went
    assert removal_calls <= replicas / 3, (removal_calls, removal_updates)
    assert dispatcher_module.REPORT_HOLD_MS in holds.by_image["big:1"], dict(holds.by_image)
    assert holds.by_image["small:1"] == {0}, dict(holds.by_image)


async def _running_on_w1(services: dict[str, int]) -> tuple[ObjectStore, Dispatcher]:
    """A store with one node ``w1`` running ``count`` tasks of each service, and its dispatcher."""
    store = await instant_store()

    def seed(tx: Tx) -> None:
        tx.create(pb.Node(id="w1", role=pb.NodeSpec.WORKER))
        for service_id, count in services.items():
            service = pb.Service(id=service_id)
            service.spec.replicated.replicas = count
            tx.create(service)
            for index in range(count):
                task = _task(service_id, index, desired=states.RUNNING, state=states.RUNNING)
                task.node_id = "w1"
                tx.create(task)

    await store.update(seed)
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    dispatcher.start()
    return store, dispatcher


async def _mark(store: ObjectStore, desired: int, *task_ids: str) -> None:
    def write(tx: Tx) -> None:
        for task_id in task_ids:
            task = copy(tx.task(task_id))  # type: ignore[type-var]
            task.desired_state = desired  # type: ignore[assignment]
            tx.update(task)

    await store.update(write)


async def test_a_big_removals_next_marks_go_in_the_same_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestrator marks a removed service's tasks 500 a transaction: a node's went one
    message per transaction (about one per task at 100,000 replicas on 1,000 nodes); while many
    are left to stop, a message waits for the next ones."""
    monkeypatch.setattr(dispatcher_module, "HOLD_MIN_STOPPING", STOPPING)
    monkeypatch.setattr(dispatcher_module, "ASSIGNMENT_GATHER", 2.0)
    store, dispatcher = await _running_on_w1({"big": 10})
    try:
        stream, _ = await opened(dispatcher)
        following = asyncio.ensure_future(next_task_ids(stream, 30.0))
        await store.update(lambda tx: tx.delete("service", "big"))
        await _mark(store, states.REMOVE, "big-0")
        await asyncio.sleep(0.1)  # past the stream's debounce: it was a message of its own
        await _mark(store, states.REMOVE, "big-1")
        assert await following == ["big-0", "big-1"]  # before: ["big-0"]
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await dispatcher.stop()


async def _stop_and_delete(store: ObjectStore, task_id: str) -> None:
    """The task's SHUTDOWN written, then the task deleted (as the reaper does)."""

    def stopped(tx: Tx) -> None:
        task = copy(tx.task(task_id))  # type: ignore[type-var]
        task.status.state = states.SHUTDOWN
        tx.update(task)

    await store.update(stopped)
    await store.update(lambda tx: tx.delete("task", task_id))


async def _next_removals(stream: AsyncIterator[bytes], within: float) -> list[str]:
    """The IDs of the tasks the stream's next message removes (sorted)."""
    message = rpb.AssignmentsMessage.FromString(await asyncio.wait_for(stream.__anext__(), within))
    return sorted(c.task.id for c in message.changes if c.action == rpb.AssignmentChange.REMOVE)


async def test_a_big_removals_deletions_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reaper deletes a removed service's stopped tasks a transaction at a time: each
    deletion went at once, a message per transaction for each node (48,000 messages for the
    100,000 deletions of a ``service rm`` on 1,000 hollow nodes, counted). While the service has
    many left to stop, a message of deletions waits for the next ones too; the last ones, and
    the deletion of a task whose removal the node was never sent, go at once."""
    monkeypatch.setattr(dispatcher_module, "HOLD_MIN_STOPPING", STOPPING)
    monkeypatch.setattr(dispatcher_module, "ASSIGNMENT_GATHER", 2.0)
    store, dispatcher = await _running_on_w1({"big": 10})
    try:
        stream, _ = await opened(dispatcher)
        await store.update(lambda tx: tx.delete("service", "big"))
        await _mark(store, states.REMOVE, *(f"big-{i}" for i in range(10)))
        assert await next_task_ids(stream, 10.0) == sorted(f"big-{i}" for i in range(10))
        following = asyncio.ensure_future(_next_removals(stream, 30.0))
        await _stop_and_delete(store, "big-0")
        await asyncio.sleep(0.1)  # past the stream's debounce: it was a message of its own
        await _stop_and_delete(store, "big-1")
        assert await following == ["big-0", "big-1"]  # before: ["big-0"]
        for index in range(2, 8):  # then 2 left to stop: fewer than HOLD_MIN_STOPPING
            await _stop_and_delete(store, f"big-{index}")
        seen: list[str] = []
        while "big-7" not in seen:
            seen += await _next_removals(stream, 30.0)
        assert sorted(seen) == [f"big-{i}" for i in range(2, 8)]
        last = asyncio.ensure_future(_next_removals(stream, 30.0))
        await _stop_and_delete(store, "big-8")
        assert await asyncio.wait_for(last, 1.0) == ["big-8"], "the last deletions wait for nothing"
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await dispatcher.stop()


@pytest.mark.parametrize(
    ("remove_service", "desired"),
    [(True, states.REMOVE), (False, states.SHUTDOWN)],
    ids=["a small service removed", "a big service's task told to shut down"],
)
async def test_a_small_removal_and_a_shutdown_go_at_once(
    monkeypatch: pytest.MonkeyPatch, remove_service: bool, desired: int
) -> None:
    monkeypatch.setattr(dispatcher_module, "HOLD_MIN_STOPPING", STOPPING)
    monkeypatch.setattr(dispatcher_module, "ASSIGNMENT_GATHER", 60.0)
    store, dispatcher = await _running_on_w1({"big": 10, "small": 2})
    try:
        stream, _ = await opened(dispatcher)
        if remove_service:
            await store.update(lambda tx: tx.delete("service", "small"))
            await _mark(store, desired, "small-0")
        else:
            await _mark(store, desired, *(f"big-{i}" for i in range(8)))
        assert await next_task_ids(stream, 10.0)
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await dispatcher.stop()


async def test_the_counts_of_tasks_to_stop() -> None:
    store, dispatcher = await _running_on_w1({"big": 4})
    await dispatcher.stop()
    counts = store.derived(ServiceTaskCounts)
    await _mark(store, states.REMOVE, "big-0", "big-1", "big-2")
    await _mark(store, states.SHUTDOWN, "big-3")  # told to stop, not removed: not counted
    assert counts.stopping("big") == 3

    def stopped(tx: Tx) -> None:
        task = copy(tx.task("big-0"))  # type: ignore[type-var]
        task.status.state = states.SHUTDOWN
        tx.update(task)

    await store.update(stopped)
    await store.update(lambda tx: tx.delete("task", "big-1"))
    assert counts.stopping("big") == 1
    fresh = ServiceTaskCounts(store)
    fresh.restored()
    assert fresh.stopping("big") == 1


async def test_a_new_leader_finishes_marking_a_removed_services_tasks() -> None:
    """The leader was lost while it marked a removed service's tasks (500 a transaction): the
    next one reconciled only the services that exist, and the rest stayed running for good."""
    store, dispatcher = await _running_on_w1({"gone": 6, "kept": 2})
    await dispatcher.stop()
    await _mark(store, states.REMOVE, "gone-0", "gone-1")  # the first piece, then the leader lost
    await store.update(lambda tx: tx.delete("service", "gone"))
    orchestrator = orchestrator_module.ReplicatedOrchestrator(store)
    orchestrator.start()  # the new leader's
    try:
        await until(
            lambda: all(t.desired_state == states.REMOVE for t in store.view.service_tasks("gone")),
            "every task of the removed service marked for removal",
        )
        assert all(t.desired_state == states.RUNNING for t in store.view.service_tasks("kept"))
    finally:
        await orchestrator.stop()
