"""A task controller reports the states its task rests at, not those it passes through at once
(issue 18).

ACCEPTED is followed by PREPARING, and READY by STARTING, in the same turn of the event loop:
the agent queues only the latest status of a task and writes only the latest to its DB, so
those two were never sent nor written, yet each cost a report (a status serialised for the DB,
the report's bookkeeping): two of every task's five. A state the controller stops at is still
reported before it waits.
"""

from __future__ import annotations

import asyncio

from shoal import states
from shoal.agent.controller import TaskController
from shoal.agent.enginegate import BoundedRuntime
from shoal.proto import objects_pb2 as pb
from shoal.testing.runtime import make_task
from shoal_runtime_fake import FakeRuntime
from shoal_runtime_fake.options import FakeOptions

DEADLINE = 10.0


class Reports:
    def __init__(self) -> None:
        self.states: list[int] = []
        self.changed = asyncio.Event()

    def __call__(self, task: pb.Task, status: pb.TaskStatus) -> None:
        self.states.append(status.state)
        self.changed.set()

    async def until(self, state: int) -> None:
        async with asyncio.timeout(DEADLINE):
            while not self.states or self.states[-1] != state:
                self.changed.clear()
                await self.changed.wait()


def controller_for(task: pb.Task, runtime: FakeRuntime) -> tuple[TaskController, Reports]:
    reports = Reports()
    controller = TaskController(task, None, BoundedRuntime(runtime), reports)
    controller.start()
    return controller, reports


async def test_a_task_to_running_reports_only_the_states_it_stops_or_waits_at() -> None:
    task = make_task("app:1", node_id="n1")
    controller, reports = controller_for(task, FakeRuntime())
    await reports.until(states.RUNNING)
    assert reports.states == [states.PREPARING, states.STARTING, states.RUNNING]
    await controller.remove()


async def test_a_state_the_task_rests_at_is_reported() -> None:
    task = make_task("app:1", node_id="n1")
    task.desired_state = states.READY
    controller, reports = controller_for(task, FakeRuntime())
    await reports.until(states.READY)
    assert reports.states == [states.PREPARING, states.READY]
    running = pb.Task()
    running.CopyFrom(task)
    running.desired_state = states.RUNNING
    controller.update(running)
    await reports.until(states.RUNNING)
    assert reports.states == [states.PREPARING, states.READY, states.STARTING, states.RUNNING]
    await controller.remove()


async def test_ready_is_reported_before_a_shutdown_asked_meanwhile_is_awaited() -> None:
    """The task is stopped while its container is created: READY goes out before the stop is
    waited for, as it did when every state was reported."""
    task = make_task("app:1", node_id="n1")
    controller, reports = controller_for(task, FakeRuntime(FakeOptions(prepare_delay=0.05)))
    await reports.until(states.PREPARING)
    stopped = pb.Task()
    stopped.CopyFrom(task)
    stopped.desired_state = states.SHUTDOWN
    controller.update(stopped)
    await reports.until(states.SHUTDOWN)
    assert reports.states == [states.PREPARING, states.READY, states.SHUTDOWN]
    await controller.remove()


async def test_a_passing_state_the_controller_stops_at_is_reported_before_it_waits() -> None:
    """ACCEPTED is passing on the way to PREPARING; a task wanted no further than ASSIGNED
    stops at it after all, and it is reported as the controller waits."""
    task = make_task("app:1", node_id="n1")
    task.desired_state = states.ASSIGNED
    controller, reports = controller_for(task, FakeRuntime())
    await reports.until(states.ACCEPTED)
    assert reports.states == [states.ACCEPTED]
    await controller.remove()
