"""The engine gate serves the work that finishes tasks first (issue 18 item 4).

With one first-come queue, a service of 50 replicas on a 16-wide gate had all 50 creates made
before its first start. Logic tests: a fake engine that records the order of its calls.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from typing import ClassVar

import pytest
from shoal.agent.enginegate import BEGIN, FINISH, OTHER, BoundedRuntime, PrioritySlots
from shoal.proto import objects_pb2 as pb
from shoal.roles.runtime import (
    ContainerRef,
    EngineInfo,
    ExitStatus,
    LogLine,
    RegistryAuth,
    RuntimeError_,
    TaskFile,
)

DEADLINE = 5.0


class OrderedEngine:
    """Records ``(operation, task id)`` as each call begins; a call ends when let go."""

    role: ClassVar[str] = "runtime"
    api_version: ClassVar[int] = 2

    def __init__(self) -> None:
        self.begun: list[tuple[str, str]] = []
        self.go = asyncio.Event()

    async def _call(self, operation: str, task_id: str) -> None:
        self.begun.append((operation, task_id))
        await self.go.wait()

    async def describe(self) -> EngineInfo:
        return EngineInfo(
            hostname="h", os="linux", arch="x86_64", nano_cpus=1, memory_bytes=1, engine_version="1"
        )

    async def prepare(
        self, task: pb.Task, files: Sequence[TaskFile] = (), *, registry_auth: RegistryAuth | None = None
    ) -> None:
        await self._call("prepare", task.id)

    async def start(self, task: pb.Task) -> ContainerRef:
        await self._call("start", task.id)
        return ContainerRef(
            task_id=task.id,
            container_id=task.id,
            service_id=task.service_id,
            node_id=task.node_id,
            running=True,
        )

    async def wait(self, task: pb.Task) -> ExitStatus:
        raise NotImplementedError

    async def shutdown(self, task: pb.Task, grace_seconds: float) -> None:
        await self._call("shutdown", task.id)

    async def remove(self, task: pb.Task) -> None:
        await self._call("remove", task.id)

    async def list_containers(self, node_id: str) -> list[ContainerRef]:
        return []

    def logs(self, task: pb.Task, *, follow: bool, tail: int | None) -> AsyncIterator[LogLine]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def _task(task_id: str) -> pb.Task:
    return pb.Task(id=task_id, node_id="node", service_id="svc")


async def _until(condition: Callable[[], object]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not condition():  # noqa: ASYNC110 - a few loop turns at most
            await asyncio.sleep(0.001)


@pytest.mark.asyncio
async def test_a_created_task_is_started_before_the_next_create_begins() -> None:
    engine = OrderedEngine()
    gate = BoundedRuntime(engine, limit=1)
    tasks = [_task(f"t{i}") for i in range(3)]

    async def create_then_start(task: pb.Task) -> None:
        await gate.prepare(task)
        await gate.start(task)

    runs = [asyncio.create_task(create_then_start(task)) for task in tasks]
    await _until(lambda: engine.begun)
    engine.go.set()  # from now on every call ends at once, in the order the gate let them in
    await asyncio.wait_for(asyncio.gather(*runs), DEADLINE)
    assert engine.begun == [
        ("prepare", "t0"),
        ("start", "t0"),
        ("prepare", "t1"),
        ("start", "t1"),
        ("prepare", "t2"),
        ("start", "t2"),
    ]


@pytest.mark.asyncio
async def test_stopping_and_removing_go_before_new_creates() -> None:
    engine = OrderedEngine()
    gate = BoundedRuntime(engine, limit=1)
    busy = asyncio.create_task(gate.prepare(_task("busy")))
    await _until(lambda: engine.begun)
    new = asyncio.create_task(gate.prepare(_task("new")))
    await asyncio.sleep(0)
    old = asyncio.create_task(gate.shutdown(_task("old"), 0))
    await asyncio.sleep(0)
    engine.go.set()
    await asyncio.wait_for(asyncio.gather(busy, new, old), DEADLINE)
    assert [task_id for _, task_id in engine.begun] == ["busy", "old", "new"]


@pytest.mark.asyncio
async def test_slots_go_by_priority_then_arrival_and_never_exceed_the_limit() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(OTHER)
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        await slots.acquire(priority)
        order.append(name)
        slots.release()

    waiters = [
        asyncio.create_task(waiter(name, priority))
        for name, priority in [("begin-1", BEGIN), ("other", OTHER), ("finish", FINISH), ("begin-2", BEGIN)]
    ]
    await asyncio.sleep(0)
    slots.release()
    await asyncio.wait_for(asyncio.gather(*waiters), DEADLINE)
    assert order == ["finish", "other", "begin-1", "begin-2"]


async def _two_queued() -> tuple[PrioritySlots, asyncio.Task[None], asyncio.Task[None]]:
    """One slot, held; a FINISH waiter and then a BEGIN waiter queued for it."""
    slots = PrioritySlots(1)
    await slots.acquire(OTHER)
    first = asyncio.create_task(slots.acquire(FINISH))
    second = asyncio.create_task(slots.acquire(BEGIN))
    await asyncio.sleep(0)
    return slots, first, second


@pytest.mark.asyncio
async def test_a_waiter_cancelled_in_the_queue_takes_no_slot() -> None:
    slots, cancelled, later = await _two_queued()
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    slots.release()
    await asyncio.wait_for(later, DEADLINE)  # the slot went past the cancelled waiter
    slots.release()
    await asyncio.wait_for(slots.acquire(OTHER), DEADLINE)  # and came back: none was lost


@pytest.mark.asyncio
async def test_a_waiter_cancelled_as_it_is_handed_a_slot_hands_it_on() -> None:
    slots, first, second = await _two_queued()
    slots.release()
    await asyncio.sleep(0)  # the slot is handed to ``first``, which has not resumed yet
    assert not first.done() and not second.done()
    first.cancel()  # ...and is cancelled before it does
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    await asyncio.wait_for(second, DEADLINE)


class FailingEngine(OrderedEngine):
    """Each call fails once let go (an engine that timed out, say)."""

    async def _call(self, operation: str, task_id: str) -> None:
        await super()._call(operation, task_id)
        raise RuntimeError_("the engine did not answer", temporary=True)


@pytest.mark.asyncio
async def test_a_call_that_fails_after_its_caller_was_cancelled_leaves_no_unretrieved_exception() -> None:
    """The caller's task was removed while its create was in flight: the create goes on (the
    gate never abandons a started call) and fails. Nobody wants its error any more, and it must
    not be left in a task nobody reads: asyncio then logs "Task exception was never retrieved"
    with a traceback, once per such call (thousands in a big removal on a failing engine)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        engine = FailingEngine()
        gate = BoundedRuntime(engine, limit=1)
        caller = asyncio.create_task(gate.prepare(_task("t1")))
        await _until(lambda: engine.begun)
        caller.cancel()
        await asyncio.sleep(0)  # the cancellation reaches the caller while the call is in flight
        engine.go.set()
        (outcome,) = await asyncio.wait_for(asyncio.gather(caller, return_exceptions=True), DEADLINE)
        assert isinstance(outcome, asyncio.CancelledError)
        await asyncio.wait_for(gate.settled("t1"), DEADLINE)
        await _until(lambda: gate.active == 0)
        del caller, outcome
        gc.collect()  # a task's unretrieved exception is reported as it is collected
        assert reported == [], [context.get("message") for context in reported]
        # and the slot came back: the next call gets it (and fails as the engine does)
        with pytest.raises(RuntimeError_):
            await asyncio.wait_for(gate.start(_task("t2")), DEADLINE)
    finally:
        loop.set_exception_handler(handler)
