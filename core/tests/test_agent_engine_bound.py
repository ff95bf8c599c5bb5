"""The agent's use of its engine under load (issue 13, defect 3), with a fake engine.

The fake behaves like a real engine behind a synchronous SDK in the ways that matter here:
an operation it has begun runs to the end even if the caller stops waiting (a thread cannot
be cancelled), and a call can time out for the caller while the engine still does the work.
The real-engine counterpart is tests/security/test_engine_overload.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from shoal import states
from shoal.agent.agent import Agent
from shoal.agent.controller import TaskController
from shoal.agent.enginegate import DEFAULT_MAX_CONCURRENT_ENGINE_CALLS, BoundedRuntime
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.runtime import ContainerRef, EngineInfo, ExitStatus, LogLine, RuntimeError_, TaskFile
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial
from shoal.testing.runtime import make_task

NODE = "node-under-load"
DEADLINE = 10.0
TIMED_OUT = "engine did not answer in time"


class FakeEngine:
    """A container engine with slow operations that cannot be called back once begun."""

    role: ClassVar[str] = "runtime"
    api_version: ClassVar[int] = 2

    def __init__(self, delay: float = 0.01, create_delay: float | None = None) -> None:
        self.delay = delay
        self.create_delay = delay if create_delay is None else create_delay
        self.containers: dict[str, ContainerRef] = {}
        self.calls: dict[tuple[str, str], int] = {}
        self.active = 0
        self.peak = 0
        #: Task IDs whose next create / start does the work but answers with a timeout.
        self.time_out_create: set[str] = set()
        self.time_out_start: set[str] = set()
        #: Task IDs whose next create times out without having done anything.
        self.lose_create: set[str] = set()

    async def _engine(self, name: str, task_id: str, work: Callable[[], None]) -> None:
        """Run ``work`` after ``delay`` as the engine would: to the end, whoever waits."""
        self.calls[(name, task_id)] = self.calls.get((name, task_id), 0) + 1

        async def operation() -> None:
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                await asyncio.sleep(self.create_delay if name == "prepare" else self.delay)
                work()
            finally:
                self.active -= 1

        await asyncio.shield(asyncio.ensure_future(operation()))

    def count(self, name: str, task: pb.Task) -> int:
        return self.calls.get((name, task.id), 0)

    async def describe(self) -> EngineInfo:
        return EngineInfo("fake", "linux", "x86_64", 2_000_000_000, 1 << 30, "0")

    async def prepare(self, task: pb.Task, files: Sequence[TaskFile] = ()) -> None:
        def create() -> None:
            if task.id in self.lose_create:
                return
            self.containers.setdefault(
                task.id, ContainerRef(task.id, f"c-{task.id}", task.service_id, task.node_id, False)
            )

        await self._engine("prepare", task.id, create)
        for unanswered in (self.time_out_create, self.lose_create):
            if task.id in unanswered:
                unanswered.discard(task.id)
                raise RuntimeError_(TIMED_OUT, temporary=True)

    async def start(self, task: pb.Task) -> ContainerRef:
        def run() -> None:
            self.containers[task.id].running = True

        await self._engine("start", task.id, run)
        if task.id in self.time_out_start:
            self.time_out_start.discard(task.id)
            raise RuntimeError_(TIMED_OUT, temporary=True)
        return self.containers[task.id]

    async def wait(self, task: pb.Task) -> ExitStatus:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def shutdown(self, task: pb.Task, grace_seconds: float) -> None:
        def stop() -> None:
            if task.id in self.containers:
                self.containers[task.id].running = False

        await self._engine("shutdown", task.id, stop)

    async def remove(self, task: pb.Task) -> None:
        await self._engine("remove", task.id, lambda: self.containers.pop(task.id, None))

    async def list_containers(self, node_id: str) -> list[ContainerRef]:
        await self._engine("list", "", lambda: None)
        return [ref for ref in self.containers.values() if ref.node_id == node_id]

    def logs(self, task: pb.Task, *, follow: bool, tail: int | None) -> AsyncIterator[LogLine]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class NoManager:
    """A transport with no manager behind it: the agent's session keeps failing, which
    leaves its assignments to the test."""

    async def call(self, *args: object, **kwargs: object) -> bytes:
        raise RPCError(StatusCode.UNAVAILABLE, "no manager in this test")

    async def _fail(self) -> AsyncIterator[bytes]:
        raise RPCError(StatusCode.UNAVAILABLE, "no manager in this test")
        yield b""  # pragma: no cover  (makes this an async generator)

    def stream(self, *args: object, **kwargs: object) -> AsyncIterator[bytes]:
        return self._fail()


def running_task(service: str = "big", slot: int = 1) -> pb.Task:
    return make_task("img", node_id=NODE, service_name=service, slot=slot)


async def eventually(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEADLINE
    while not check():
        assert loop.time() < give_up, f"timed out after {DEADLINE}s waiting for {what}"
        await asyncio.sleep(0.01)


def message(
    kind: int, tasks: list[pb.Task], action: int = rpb.AssignmentChange.UPDATE
) -> rpb.AssignmentsMessage:
    changes = [rpb.AssignmentChange(action=action, task=task) for task in tasks]  # type: ignore[arg-type]
    return rpb.AssignmentsMessage(type=kind, changes=changes)  # type: ignore[arg-type]


@pytest.fixture
async def agent_on(tmp_path: Path) -> AsyncIterator[Callable[[FakeEngine], Awaitable[Agent]]]:
    agents: list[Agent] = []

    async def make(engine: FakeEngine) -> Agent:
        agent = Agent(
            node_id=NODE,
            state_dir=tmp_path,
            runtime=engine,
            runtime_name="fake",
            transport=NoManager(),  # type: ignore[arg-type]
            tls=lambda: TLSMaterial(b"", b"", b""),
            managers=["127.0.0.1:1"],
        )
        await agent.start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.stop()


def states_of(agent: Agent) -> set[int]:
    return {controller.status.state for controller in agent.controllers.values()}


async def test_a_large_service_never_has_more_engine_calls_in_flight_than_the_bound(
    agent_on: Callable[[FakeEngine], Awaitable[Agent]],
) -> None:
    engine = FakeEngine()
    agent = await agent_on(engine)
    tasks = [running_task(slot=slot) for slot in range(1, 101)]
    await agent._apply_assignments(message(rpb.AssignmentsMessage.COMPLETE, tasks))
    await eventually(lambda: states_of(agent) == {states.RUNNING}, "100 tasks running")
    assert engine.peak == DEFAULT_MAX_CONCURRENT_ENGINE_CALLS, engine.peak

    await agent._apply_assignments(
        message(rpb.AssignmentsMessage.INCREMENTAL, tasks, rpb.AssignmentChange.REMOVE)
    )
    await eventually(lambda: engine.containers == {}, "every container removed")
    assert engine.peak == DEFAULT_MAX_CONCURRENT_ENGINE_CALLS, engine.peak


async def test_the_bound_is_the_one_configured() -> None:
    engine = FakeEngine()
    bounded = BoundedRuntime(engine, 3)
    tasks = [running_task(slot=slot) for slot in range(1, 21)]
    await asyncio.gather(*(bounded.prepare(task) for task in tasks))
    assert (engine.peak, bounded.peak, len(engine.containers)) == (3, 3, 20)
    with pytest.raises(ValueError, match="at least 1"):
        BoundedRuntime(engine, 0)


async def run_one(engine: FakeEngine, task: pb.Task) -> TaskController:
    controller = TaskController(task, None, BoundedRuntime(engine), lambda task, status: None)
    controller.start()
    await eventually(lambda: controller.status.state == states.RUNNING, "the task running")
    await controller.close()
    return controller


async def test_a_create_that_timed_out_is_looked_up_before_it_is_made_again() -> None:
    engine = FakeEngine()
    happened, lost = running_task(slot=1), running_task(slot=2)
    engine.time_out_create.add(happened.id)
    engine.lose_create.add(lost.id)
    await run_one(engine, happened)
    await run_one(engine, lost)
    assert (engine.count("prepare", happened), engine.count("prepare", lost)) == (1, 2)
    assert engine.containers[happened.id].running and engine.containers[lost.id].running


async def test_a_start_that_timed_out_but_happened_is_adopted_not_repeated() -> None:
    engine = FakeEngine()
    task = running_task()
    engine.time_out_start.add(task.id)
    controller = await run_one(engine, task)
    assert engine.count("start", task) == 1
    assert controller.status.container.container_id == f"c-{task.id}"


async def test_a_task_removed_while_its_create_is_in_flight_leaves_no_container(
    agent_on: Callable[[FakeEngine], Awaitable[Agent]],
) -> None:
    engine = FakeEngine(create_delay=0.3)
    agent = await agent_on(engine)
    task = running_task()
    await agent._apply_assignments(message(rpb.AssignmentsMessage.COMPLETE, [task]))
    await eventually(lambda: engine.count("prepare", task) == 1, "the create to reach the engine")
    await agent._apply_assignments(
        message(rpb.AssignmentsMessage.INCREMENTAL, [task], rpb.AssignmentChange.REMOVE)
    )
    await eventually(lambda: engine.count("remove", task) >= 1 and engine.active == 0, "the removal to end")
    assert engine.containers == {}


async def test_containers_no_task_accounts_for_are_swept_after_a_removal(
    agent_on: Callable[[FakeEngine], Awaitable[Agent]],
) -> None:
    engine = FakeEngine()
    agent = await agent_on(engine)
    kept, removed = running_task(slot=1), running_task(slot=2)
    await agent._apply_assignments(message(rpb.AssignmentsMessage.COMPLETE, [kept, removed]))
    await eventually(lambda: states_of(agent) == {states.RUNNING}, "both tasks running")
    # What a create that timed out leaves behind once the engine gets round to it.
    late = running_task(slot=3)
    engine.containers[late.id] = ContainerRef(late.id, f"c-{late.id}", late.service_id, NODE, False)
    await agent._apply_assignments(
        message(rpb.AssignmentsMessage.INCREMENTAL, [removed], rpb.AssignmentChange.REMOVE)
    )
    await eventually(lambda: set(engine.containers) == {kept.id}, "the stray container removed")


async def test_removing_many_tasks_does_not_hold_up_assignments(
    agent_on: Callable[[FakeEngine], Awaitable[Agent]],
) -> None:
    engine = FakeEngine(delay=0.05)
    agent = await agent_on(engine)
    tasks = [running_task(slot=slot) for slot in range(1, 41)]
    await agent._apply_assignments(message(rpb.AssignmentsMessage.COMPLETE, tasks))
    await eventually(lambda: states_of(agent) == {states.RUNNING}, "40 tasks running")
    engine.delay = 1.0  # a busy engine: 40 removals take 5 rounds of 8
    removal = message(rpb.AssignmentsMessage.INCREMENTAL, tasks, rpb.AssignmentChange.REMOVE)
    await asyncio.wait_for(agent._apply_assignments(removal), engine.delay)
    newcomer = running_task(service="next")
    await agent._apply_assignments(message(rpb.AssignmentsMessage.INCREMENTAL, [newcomer]))
    assert set(agent.controllers) == {newcomer.id}
    engine.delay = 0.01
    await agent.remove_all()
    assert engine.containers == {}


async def test_opening_a_session_does_not_queue_behind_engine_work() -> None:
    """The agent describes its engine when it opens a session with a manager: behind a
    backlog of creates that would delay the session past its heartbeats."""
    engine = FakeEngine(delay=2.0)
    bounded = BoundedRuntime(engine, 2)
    backlog = [asyncio.ensure_future(bounded.prepare(running_task(slot=n))) for n in range(1, 11)]
    try:
        await eventually(lambda: engine.active == 2, "the engine busy")
        info = await asyncio.wait_for(bounded.describe(), 1.0)
        assert info.hostname == "fake"
    finally:
        for call in backlog:
            call.cancel()
        engine.delay = 0.0
        await asyncio.gather(*backlog, return_exceptions=True)


async def test_a_huge_assignment_lets_the_session_run_while_it_is_applied(
    agent_on: Callable[[FakeEngine], Awaitable[Agent]],
) -> None:
    """Applying 10,000 assignments takes over a second of task DB writes: heartbeats and
    status reports must get turns meanwhile."""
    agent = await agent_on(FakeEngine(delay=0.0))
    turns = 0

    async def session_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(session_work())
    await asyncio.sleep(0)
    before = turns
    tasks = [running_task(slot=slot) for slot in range(1, 1001)]
    await agent._apply_assignments(message(rpb.AssignmentsMessage.INCREMENTAL, tasks))
    during = turns - before
    ticker.cancel()
    assert during >= 1000 // 256, during
    await agent.remove_all()
