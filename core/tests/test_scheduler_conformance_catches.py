"""The scheduler conformance suite fails the schedulers issue 16 says it let through.

A small first-fit scheduler passes the whole suite (``TestFirstFit``); each broken variant of
it (ignores the extension filters, places only the first batch of a call, gives up part way
through a batch) must fail the suite test named beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pytest
from shoal.placement import Filter, Pipeline, group_batches
from shoal.proto import objects_pb2 as pb
from shoal.roles import NodeInfo, Placement, SchedulerProvider
from shoal.testing.scheduler import SchedulerConformance


class FirstFit:
    """Each task on the first node (in node order) that passes the pipeline."""

    role: ClassVar[str] = "scheduler"
    api_version: ClassVar[int] = 2

    async def schedule(
        self, tasks: Sequence[pb.Task], nodes: Sequence[NodeInfo], filters: Sequence[Filter]
    ) -> list[Placement]:
        placements: list[Placement] = []
        for batch in self.batches(tasks):
            pipeline = Pipeline(self.filters(filters))
            for task in batch[: self.limit(batch)]:
                pipeline.set_task(task)
                candidates = [n for n in nodes if not task.node_id or n.id == task.node_id]
                chosen = next((n for n in candidates if pipeline.process(n)), None)
                if chosen is None:
                    placements.append(Placement(task.id, "", pipeline.explain() or "no nodes"))
                    continue
                chosen.add_task(task)
                placements.append(Placement(task.id, chosen.id))
            placements.extend(Placement(t.id, "", "gave up") for t in batch[self.limit(batch) :])
        return placements

    def batches(self, tasks: Sequence[pb.Task]) -> list[list[pb.Task]]:
        return group_batches(tasks)

    def filters(self, filters: Sequence[Filter]) -> Sequence[Filter]:
        return filters

    def limit(self, batch: Sequence[pb.Task]) -> int:
        return len(batch)


class IgnoresFilters(FirstFit):
    def filters(self, filters: Sequence[Filter]) -> Sequence[Filter]:
        return ()


class FirstBatchOnly(FirstFit):
    def batches(self, tasks: Sequence[pb.Task]) -> list[list[pb.Task]]:
        return group_batches(tasks)[:1] + [[] for _ in group_batches(tasks)[1:]]


class PartOfBatch(FirstFit):
    def limit(self, batch: Sequence[pb.Task]) -> int:
        return max(1, len(batch) // 2)


class TestFirstFit(SchedulerConformance):
    @pytest.fixture
    def scheduler(self) -> SchedulerProvider:
        return FirstFit()


@pytest.mark.parametrize(
    ("broken", "suite_test"),
    [
        (IgnoresFilters, "test_applies_extension_filters"),
        (FirstBatchOnly, "test_places_every_batch"),
        (PartOfBatch, "test_places_whole_batch"),
        (PartOfBatch, "test_one_placement_per_task"),
    ],
)
@pytest.mark.asyncio
async def test_suite_catches(broken: type[FirstFit], suite_test: str) -> None:
    run = getattr(SchedulerConformance(), suite_test)
    with pytest.raises(AssertionError):
        await run(broken())
