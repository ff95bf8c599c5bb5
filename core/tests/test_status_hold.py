"""Status reports that may wait when nobody waits for them (issue 18).

At 100,000 replicas on 1,000 nodes a node gets its ~100 tasks one by one, and each task's
RUNNING was an UpdateTaskStatus call of its own. The leader now tells the agent, per assignment
message, how long it may hold its tasks' reports (``report_within_ms``), only while their
service is far from running; the agent's reports of such tasks go together. A small service, a
rolling update's new tasks and a big create's last tasks are not held.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from shoal import rpc, states
from shoal.agent.taskdb import TaskDB
from shoal.manager import dispatcher as dispatcher_module
from shoal.manager.dispatcher import Dispatcher
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import RPCError, StatusCode
from shoal.testing.cluster import InProcessCluster
from shoal.testing.dispatchprobe import Holds, StatusCalls, report_within_ms, until, updates
from shoal.testing.objectstore import instant_store
from shoal.testing.stubmanager import Transactions, assigned_task, stub_agent
from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.runtime import FakeRuntime

#: The held services' size in these tests (``HOLD_MIN_UNSETTLED`` is made small to match).
UNSETTLED = 6
#: Deadline of the waits on a loaded CI machine.
DEADLINE = 40.0


async def test_a_big_service_on_few_nodes_reports_its_tasks_in_few_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks reaching RUNNING one at a time on each node (an engine that starts one container
    at a time, 20 ms each): each RUNNING was a call of its own, about one call per task (21
    calls for 30 tasks), and each task's task DB writes a transaction of their own. Now the
    leader lets the agents hold them (the service is far from running), a call carries many,
    and the task DB commits with the calls."""
    monkeypatch.setattr(dispatcher_module, "HOLD_MIN_UNSETTLED", UNSETTLED)
    monkeypatch.setattr(FakeRuntime, "engine_concurrency", 1, raising=False)
    calls = StatusCalls(monkeypatch)
    replicas = 5 * UNSETTLED
    async with InProcessCluster(
        tmp_path, managers=1, workers=1, runtime_options={"start_delay": "0.02"}
    ) as cluster:
        transactions = Transactions()
        for node in cluster.nodes:
            assert node.daemon.agent is not None
            node.daemon.agent.db._db.set_trace_callback(transactions)
        await cluster.call("service.create", name="big", image="app:1", replicas=replicas)
        await cluster.wait_for_running("big", replicas, deadline=DEADLINE)
        written, nodes = transactions.count, len(cluster.nodes)
    assert calls.updates >= replicas, (calls.calls, calls.updates)  # every RUNNING went
    assert calls.calls <= replicas / 4, (calls.calls, calls.updates)
    assert written <= calls.calls + 2 * nodes, (written, calls.calls)


async def test_a_small_service_and_a_rolling_update_report_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a service with many tasks still to start is held: a small one, and a rolling
    update's new tasks (the updater waits for each slot's RUNNING), are sent with no hold."""
    monkeypatch.setattr(dispatcher_module, "HOLD_MIN_UNSETTLED", UNSETTLED)
    holds = Holds(monkeypatch)
    async with InProcessCluster(tmp_path, managers=1, workers=1) as cluster:
        await cluster.call("service.create", name="small", image="small:1", replicas=UNSETTLED - 1)
        await cluster.wait_for_running("small", UNSETTLED - 1, deadline=DEADLINE)
        big = 2 * UNSETTLED
        await cluster.call("service.create", name="big", image="big:1", replicas=big, stop_grace_period="0s")
        await cluster.wait_for_running("big", big, deadline=DEADLINE)
        await cluster.call(
            "service.update",
            service="big",
            image="big:2",
            update_parallelism=2,
            update_delay="0s",
            update_monitor="0.1s",
        )

        async def updated() -> bool:
            tasks = await cluster.tasks("big")
            return bool(sum(t["Image"] == "big:2" and t["State"] == "Running" for t in tasks) == big)

        await cluster.wait_until(updated, "every task of big updated", DEADLINE)
    assert holds.by_image["small:1"] == {0}, dict(holds.by_image)
    assert dispatcher_module.REPORT_HOLD_MS in holds.by_image["big:1"], dict(holds.by_image)
    assert holds.by_image["big:2"] == {0}, dict(holds.by_image)


def service_tasks(service_id: str, count: int, *, running: int = 0) -> list[pb.Task]:
    tasks = []
    for index in range(count):
        task = pb.Task(id=f"{service_id}-{index}", service_id=service_id, node_id="n1", slot=index + 1)
        task.desired_state = states.RUNNING
        task.status.state = states.RUNNING if index < running else states.ASSIGNED
        tasks.append(task)
    return tasks


async def test_the_dispatcher_allows_a_hold_only_while_the_services_are_far_from_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatcher_module, "HOLD_MIN_UNSETTLED", UNSETTLED)
    store = await instant_store()
    big = service_tasks("big", UNSETTLED + 2)
    nearly = service_tasks("nearly", UNSETTLED + 2, running=3)  # 5 still to start
    small = service_tasks("small", 2)
    everywhere = service_tasks("everywhere", UNSETTLED + 2)  # a global service on many nodes
    services = [pb.Service(id=name) for name in ("big", "nearly", "small", "everywhere")]
    for service in services[:3]:
        service.spec.replicated.replicas = UNSETTLED + 2
    getattr(services[3].spec, "global").SetInParent()

    def create(tx: Any) -> None:
        for item in (*services, *big, *nearly, *small, *everywhere):
            tx.create(item)

    await store.update(create)
    dispatcher = Dispatcher(store, "c1", lambda: [])
    hold = dispatcher_module.REPORT_HOLD_MS
    assert report_within_ms(dispatcher, updates(*big[:3])) == hold
    assert report_within_ms(dispatcher, updates(big[0], small[0])) == 0, "one task waited for: none held"
    assert report_within_ms(dispatcher, updates(nearly[-1])) == 0, "a service close to running"
    assert report_within_ms(dispatcher, updates(everywhere[0])) == 0, "one task per node: nothing to gather"
    stopping = pb.Task()
    stopping.CopyFrom(big[1])
    stopping.desired_state = states.SHUTDOWN
    assert report_within_ms(dispatcher, updates(big[0], stopping)) == 0, "a task told to stop"
    removal = rpb.AssignmentChange(action=rpb.AssignmentChange.REMOVE, task=pb.Task(id=big[2].id))
    assert report_within_ms(dispatcher, [removal]) == 0, "nothing to report"
    assert report_within_ms(dispatcher, [removal, *updates(big[0])]) == hold

    def start_them(tx: Any) -> None:  # the big service's tasks run: it is no longer far from it
        for task in big[: len(big) - UNSETTLED + 1]:
            running = pb.Task()
            running.CopyFrom(tx.task(task.id))
            running.status.state = states.RUNNING
            tx.update(running)

    await store.update(start_them)
    assert report_within_ms(dispatcher, updates(big[-1])) == 0


async def test_a_task_db_write_may_wait_as_long_as_it_is_allowed(tmp_path: Path) -> None:
    """A held task's writes wait for the report that flushes them (``within``), and an
    ordinary write still commits within the DB's delay, the held ones with it."""
    db = TaskDB(tmp_path / "held" / "tasks.db", flush_delay=0.01)
    clock = TaskDB(tmp_path / "clock" / "tasks.db", flush_delay=0.01)  # time passing, observed
    try:
        db.put_task(pb.Task(id="held"), within=60)
        db.put_task(pb.Task(id="ordinary"))
        await until(lambda: db.transactions == 1, "the ordinary write committed")
        db.put_status("held", pb.TaskStatus(state=states.RUNNING), within=60)
        clock.put_task(pb.Task(id="tick"))
        await until(lambda: clock.transactions == 1, "a write with the DB's delay committed elsewhere")
        assert db.transactions == 1, "a write allowed to wait a minute was committed at once"
        db.flush()  # the report's
        assert db.transactions == 2
        assert sorted(task.id for task, _ in db.load()) == ["held", "ordinary"]
    finally:
        db.close()
        clock.close()


class HoldingManager:
    """One node's leader, scripted: the first session sends ``tasks`` in an incremental
    message whose reports may wait a minute; the session ends when ``end_session`` is set, and
    the next one's complete set holds the tasks as the leader recorded them (assigned)."""

    def __init__(self, tasks: list[pb.Task]) -> None:
        self.tasks = tasks
        self.sessions = 0
        self.end_session = asyncio.Event()
        self.reported: dict[int, list[int]] = collections.defaultdict(list)

    def stream(self, target: str, method: str, request: bytes, **kwargs: object) -> AsyncIterator[bytes]:
        return self._session() if method == rpc.SESSION else self._assignments()

    async def _session(self) -> AsyncIterator[bytes]:
        self.sessions += 1
        yield rpb.SessionMessage(session_id=f"s{self.sessions}", heartbeat_period=60).SerializeToString()
        if self.sessions == 1:
            await self.end_session.wait()
            raise RPCError(StatusCode.UNAVAILABLE, "the leader is gone")
        await asyncio.Event().wait()

    async def _assignments(self) -> AsyncIterator[bytes]:
        complete = rpb.AssignmentsMessage(type=rpb.AssignmentsMessage.COMPLETE, results_in=1)
        if self.sessions > 1:
            complete.changes.extend(updates(*self.tasks))
        yield complete.SerializeToString()
        if self.sessions == 1:
            yield rpb.AssignmentsMessage(
                type=rpb.AssignmentsMessage.INCREMENTAL,
                applies_to=1,
                results_in=2,
                changes=updates(*self.tasks),
                report_within_ms=60_000,
            ).SerializeToString()
        await asyncio.Event().wait()

    async def call(self, target: str, method: str, request: bytes, **kwargs: object) -> bytes:
        if method == rpc.HEARTBEAT:
            return rpb.HeartbeatResponse(period=60).SerializeToString()
        if method == rpc.UPDATE_TASK_STATUS:
            report = rpb.UpdateTaskStatusRequest.FromString(request)
            self.reported[self.sessions].extend(update.status.state for update in report.updates)
        return b""


async def test_held_reports_wait_and_a_new_session_sends_them_at_once(tmp_path: Path) -> None:
    """Tasks whose reports may wait a minute run without a report; when the session is lost
    and another opens, their RUNNING goes to the new leader at once (nothing held is lost)."""
    tasks = [assigned_task("n1", index) for index in range(4)]
    manager = HoldingManager(tasks)
    agent = stub_agent(manager, tmp_path, FakeRuntime(FakeOptions()), "n1")  # type: ignore[arg-type]
    await agent.start()
    try:
        await until(lambda: agent.tasks_running == len(tasks), "the tasks running on the node")
        clock = TaskDB(tmp_path / "clock" / "tasks.db", flush_delay=0.2)  # time passing, observed
        clock.put_task(pb.Task(id="tick"))
        await until(lambda: clock.transactions == 1, "four status intervals passed")
        clock.close()
        assert dict(manager.reported) == {}, "a report that could wait a minute went"
        manager.end_session.set()
        await until(lambda: len(manager.reported[2]) == len(tasks), "the held reports sent")
        assert manager.reported[2] == [states.RUNNING] * len(tasks)
    finally:
        await agent.stop()
