"""The fake engine finds a task's container without walking every container (issue 18).

Every runtime call looks its task's container up (by name, then by its node and task labels),
and ``prepare`` does it twice. Each lookup walked the engine's containers: a node's work grew
with the square of its tasks (a hollow node with 100 tasks, an in-process node with thousands).
"""

from __future__ import annotations

from shoal.testing.runtime import make_task
from shoal_runtime_fake import FakeRuntime
from shoal_runtime_fake.engine import FakeContainer

HELD = 300


class WalkCounter(dict[str, FakeContainer]):
    """The engine's containers, counting the walks over them."""

    walks = 0

    def values(self):  # type: ignore[no-untyped-def, override]
        WalkCounter.walks += 1
        return super().values()

    def __iter__(self):  # type: ignore[no-untyped-def]
        WalkCounter.walks += 1
        return super().__iter__()


async def test_one_tasks_calls_walk_none_of_the_engines_containers() -> None:
    runtime = FakeRuntime()
    for _ in range(HELD):
        await runtime.prepare(make_task("app:1", node_id="n1"))
    runtime.engine.containers = WalkCounter(runtime.engine.containers)
    task = make_task("app:1", node_id="n1")
    await runtime.prepare(task)
    ref = await runtime.start(task)
    assert (await runtime.find(task)) == ref
    await runtime.shutdown(task, 0.0)
    await runtime.remove(task)
    assert await runtime.find(task) is None
    assert WalkCounter.walks == 0
    assert len(runtime.engine.containers) == HELD
    # A removed container's name is free again, and its labels find nothing.
    await runtime.prepare(task)
    assert (await runtime.find(task)) is not None
