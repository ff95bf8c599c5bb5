"""The spread scheduler provider (Swarm's "HA scheduling", Docker 1.13+).

For each batch of tasks sharing a service and spec version it builds one decision tree over
all nodes (O(nodes) per batch, not per task), keeping only nodes that pass
``shoal.placement.Pipeline``; then it places tasks one by one on the node with the fewest
tasks of the service (total tasks, then node ID break ties), re-checking the node after each
placement because resources and per-node limits shrink. Tasks that fit nowhere get a
placement with no node and the pipeline's explanation.

Unlike Swarm, ties are broken by node ID instead of Go map order, so a given input always
gives the same placements. Swarm's down-weighting of nodes where the service recently failed
is not applied: ``NodeInfo`` carries no failure history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from shoal.plugin import Filter, NodeInfo, Pipeline, Placement, Preference, group_batches, parse_preference
from shoal.plugin import objects_pb2 as pb

from shoal_scheduler_spread.tree import Cursor, build_tree


def _preferences(task: pb.Task) -> list[Preference]:
    """The task's placement preferences; ones that do not parse are ignored, as Swarm does."""
    parsed = []
    for expr in task.spec.placement.preferences:
        try:
            parsed.append(parse_preference(expr))
        except ValueError:
            continue
    return parsed


def explain(pipeline: Pipeline, task: pb.Task, nodes: Sequence[NodeInfo]) -> str:
    """Why ``task`` fits on none of ``nodes`` right now, in Swarm's words."""
    if not nodes:
        return "no nodes in the cluster"
    pipeline.set_task(task)
    for info in nodes:
        pipeline.process(info)
    return pipeline.explain() or "no node has room for the task"


class SpreadScheduler:
    """Places each task on the eligible node with the fewest tasks of its service."""

    role: ClassVar[str] = "scheduler"
    api_version: ClassVar[int] = 2

    async def schedule(
        self, tasks: Sequence[pb.Task], nodes: Sequence[NodeInfo], filters: Sequence[Filter] = ()
    ) -> list[Placement]:
        """One placement per task; see ``shoal.roles.SchedulerProvider.schedule``."""
        return self.schedule_sync(tasks, nodes, filters)

    def schedule_sync(
        self, tasks: Sequence[pb.Task], nodes: Sequence[NodeInfo], filters: Sequence[Filter] = ()
    ) -> list[Placement]:
        """``schedule`` without the event loop (it never waits; handy for benchmarks)."""
        placements: list[Placement] = []
        preassigned = [task for task in tasks if task.node_id]
        if preassigned:
            placements.extend(self._schedule_preassigned(preassigned, nodes, filters))
        for batch in group_batches([task for task in tasks if not task.node_id]):
            placements.extend(self.schedule_batch(batch, nodes, filters))
        return placements

    def schedule_batch(
        self, batch: Sequence[pb.Task], nodes: Sequence[NodeInfo], filters: Sequence[Filter] = ()
    ) -> list[Placement]:
        """Place a batch of tasks of one service and spec version."""
        if not batch:
            return []
        first = batch[0]
        pipeline = Pipeline(filters).set_task(first)
        tree = build_tree(nodes, _preferences(first), pipeline, first.service_id, len(batch))
        cursor = Cursor(batch, pipeline)
        tree.schedule(len(batch), cursor)
        placements = cursor.placements
        if cursor.next < len(batch):
            reason = explain(pipeline, first, nodes)
            placements.extend(Placement(task.id, "", reason) for task in batch[cursor.next :])
        return placements

    def _schedule_preassigned(
        self, tasks: Sequence[pb.Task], nodes: Sequence[NodeInfo], filters: Sequence[Filter]
    ) -> list[Placement]:
        """Global-service tasks name their node already: only check that it still fits."""
        by_id = {info.id: info for info in nodes}
        pipeline = Pipeline(filters)
        placements = []
        for task in tasks:
            info = by_id.get(task.node_id)
            pipeline.set_task(task)
            if info is None:
                placements.append(Placement(task.id, "", f"node {task.node_id} is not in the cluster"))
            elif pipeline.process(info):
                info.add_task(task)
                placements.append(Placement(task.id, info.id))
            else:
                placements.append(Placement(task.id, "", pipeline.explain()))
        return placements
