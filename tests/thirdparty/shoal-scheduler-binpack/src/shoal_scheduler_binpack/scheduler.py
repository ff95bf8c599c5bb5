"""Binpack: put each task on the busiest node that still passes the placement filters.

Packing keeps whole nodes free (to drain, power down or hand to a big job) at the price of
availability: with spread, losing a node loses few replicas of a service; with binpack it may
lose them all. Eligibility (node ready, constraints, resources, ports, max replicas, extension
filters) comes from ``shoal.placement.Pipeline``, so it means the same as with any scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from shoal.plugin import Filter, NodeInfo, Pipeline, Placement, group_batches
from shoal.plugin import objects_pb2 as pb


def fullest_first(info: NodeInfo) -> tuple[int, int, int, str]:
    """Sort key: most tasks, then least free memory, then least free CPU, then node ID."""
    return (-info.total_tasks, info.available_memory_bytes, info.available_nano_cpus, info.id)


class BinpackScheduler:
    """Places each task on the eligible node that already runs the most tasks."""

    role: ClassVar[str] = "scheduler"
    api_version: ClassVar[int] = 2

    async def schedule(
        self, tasks: Sequence[pb.Task], nodes: Sequence[NodeInfo], filters: Sequence[Filter] = ()
    ) -> list[Placement]:
        placements: list[Placement] = []
        for batch in group_batches(tasks):  # one service and spec version per batch
            placements.extend(self._schedule_batch(batch, nodes, filters))
        return placements

    def _schedule_batch(
        self, batch: Sequence[pb.Task], nodes: Sequence[NodeInfo], filters: Sequence[Filter]
    ) -> list[Placement]:
        # The extension filters come with every call: pass them on, or they do not apply.
        pipeline = Pipeline(filters).set_task(batch[0])  # same spec for the whole batch
        candidates = sorted((info for info in nodes if pipeline.process(info)), key=fullest_first)
        placements = []
        index = 0
        for task in batch:
            if index == len(candidates):
                break
            info = candidates[index]
            info.add_task(task)  # later tasks must see this one (resources, ports, counts)
            placements.append(Placement(task.id, info.id))
            if not pipeline.recheck(info):
                index += 1  # this node is full for this task: move on to the next fullest
            # A node that took a task only gets fuller, so it stays first: no re-sort needed.
        leftover = batch[len(placements) :]
        if leftover:
            reason = self._explain(pipeline, batch[0], nodes)
            placements.extend(Placement(task.id, "", reason) for task in leftover)
        return placements

    @staticmethod
    def _explain(pipeline: Pipeline, task: pb.Task, nodes: Sequence[NodeInfo]) -> str:
        """Why no node takes ``task`` now; shown as ``no suitable node (<reason>)``."""
        if not nodes:
            return "no nodes in the cluster"
        pipeline.set_task(task)
        for info in nodes:
            pipeline.process(info)
        return pipeline.explain()
