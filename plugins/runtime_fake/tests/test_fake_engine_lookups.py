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


async def test_a_nodes_list_walks_none_of_the_other_nodes_containers() -> None:
    """An agent lists its node's containers after removals (once a second while a big service
    goes): the list walked every container of the engine, all the nodes' when they share one."""
    runtime = FakeRuntime()
    for _ in range(HELD):
        await runtime.prepare(make_task("app:1", node_id="elsewhere"))
    mine = [make_task("app:1", node_id="n1") for _ in range(3)]
    for task in mine:
        await runtime.prepare(task)
    await runtime.start(mine[1])
    runtime.engine.containers = WalkCounter(runtime.engine.containers)
    WalkCounter.walks = 0
    listed = await runtime.list_containers("n1")
    assert [(ref.task_id, ref.running) for ref in listed] == [
        (mine[0].id, False),
        (mine[1].id, True),
        (mine[2].id, False),
    ]
    assert listed[1] == await runtime.find(mine[1])
    await runtime.remove(mine[0])
    assert [ref.task_id for ref in await runtime.list_containers("n1")] == [mine[1].id, mine[2].id]
    for task in mine[1:]:
        await runtime.remove(task)
    assert await runtime.list_containers("n1") == []
    assert WalkCounter.walks == 0
    assert len(await runtime.list_containers("elsewhere")) == HELD
