"""A runtime whose wait ignores its cancellation does not keep a task from stopping: the
controller gives the cancelled wait a bounded time, says so in a warning, and stops the
container all the same."""

from __future__ import annotations

import asyncio
import logging

import pytest
from shoal import states
from shoal.agent import controller as controller_module
from shoal.agent.controller import TaskController
from shoal.agent.enginegate import BoundedRuntime
from shoal.proto import objects_pb2 as pb
from shoal.roles.runtime import ExitStatus
from shoal.testing.runtime import make_task
from shoal_runtime_fake import FakeRuntime

DEADLINE = 10.0


class DeafRuntime(FakeRuntime):
    """Its wait goes on after a cancellation, until ``released``."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()
        self.shutdowns = 0

    async def wait(self, task: pb.Task) -> ExitStatus:
        try:
            return await super().wait(task)
        except asyncio.CancelledError:
            await self.released.wait()
            raise

    async def shutdown(self, task: pb.Task, grace_seconds: float) -> None:
        self.shutdowns += 1
        await super().shutdown(task, grace_seconds)


async def test_a_wait_deaf_to_its_cancellation_does_not_keep_the_task_from_stopping(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the controller awaited the cancelled wait with no limit: the task stayed RUNNING
    and its container was never stopped."""
    monkeypatch.setattr(controller_module, "CANCELLED_WAIT_LIMIT", 0.2, raising=False)
    runtime = DeafRuntime()
    seen: list[int] = []
    changed = asyncio.Event()

    def report(task: pb.Task, status: pb.TaskStatus) -> None:
        seen.append(status.state)
        changed.set()

    async def until(state: int) -> None:
        async with asyncio.timeout(DEADLINE):
            while not seen or seen[-1] != state:
                changed.clear()
                await changed.wait()

    task = make_task("app:1", node_id="n1")
    controller = TaskController(task, None, BoundedRuntime(runtime), report)
    controller.start()
    await until(states.RUNNING)
    stopped = pb.Task()
    stopped.CopyFrom(task)
    stopped.desired_state = states.SHUTDOWN
    with caplog.at_level(logging.WARNING, logger="shoal.agent"):
        controller.update(stopped)
        await until(states.SHUTDOWN)
    assert runtime.shutdowns == 1
    assert any(task.id in r.message and "DeafRuntime" in r.message for r in caplog.records), caplog.text
    runtime.released.set()
    await controller.remove()
