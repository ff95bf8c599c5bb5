"""Swarm's decision tree: spread a batch across label groups, then across nodes.

With placement preferences, nodes are grouped by label value, one tree level per preference
(a node without the label joins the ``""`` group). Each level evens out the service's task
count between its groups (swarmkit ``scheduleNTasksOnSubtree``); a group that cannot take
its share is marked full and its surplus flows to the others. At a leaf, tasks go one at a
time to the best node (fewest tasks of the service, then fewest tasks in total, then node
ID), which fills each node up to the level of the next, as swarmkit's
``scheduleNTasksOnNodes`` intends.

Without preferences the tree is a single leaf.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from shoal.plugin import NodeInfo, Pipeline, Placement, Preference
from shoal.plugin import objects_pb2 as pb

# A leaf heap entry: (tasks of the service, total tasks, node ID, sequence, node). The node ID
# makes ties deterministic; the sequence number keeps NodeInfo out of comparisons.
_Entry = tuple[int, int, str, int, NodeInfo]


class Cursor:
    """The tasks of the batch still to place, and the placements made so far."""

    __slots__ = ("next", "pipeline", "placements", "service", "tasks")

    def __init__(self, tasks: Sequence[pb.Task], pipeline: Pipeline) -> None:
        self.tasks = tasks
        self.next = 0
        self.pipeline = pipeline
        self.placements: list[Placement] = []
        self.service = tasks[0].service_id if tasks else ""


class Branch:
    """One node of the decision tree: either a leaf holding nodes or a map of sub-groups."""

    __slots__ = ("candidates", "children", "heap", "tasks")

    def __init__(self) -> None:
        #: Tasks of the service already on the nodes below (eligible or not), as in swarmkit.
        self.tasks = 0
        self.children: dict[str, Branch] = {}
        self.candidates: list[NodeInfo] = []
        self.heap: list[_Entry] = []

    # ----------------------------------------------------------------- building

    def prepare(self, service: str, limit: int) -> None:
        """Turn each leaf's candidates into a heap of its best ``limit`` nodes.

        ``limit`` tasks never need more than ``limit`` nodes (each eligible node takes at
        least one), so the rest are dropped: Swarm's bounded heap.
        """
        if self.children:
            for child in self.children.values():
                child.prepare(service, limit)
            return
        entries = [
            (info.tasks_by_service.get(service, 0), info.total_tasks, info.id, seq, info)
            for seq, info in enumerate(self.candidates)
        ]
        if len(entries) > limit:
            entries = heapq.nsmallest(limit, entries)
        heapq.heapify(entries)
        self.heap = entries
        self.candidates = []

    # ----------------------------------------------------------------- scheduling

    def schedule(self, count: int, cursor: Cursor) -> int:
        """Place up to ``count`` tasks below this branch; return how many were placed."""
        if not self.children:
            return self._fill(count, cursor)
        scheduled = 0
        usable = dict(self.children)
        progress = True
        while scheduled < count and usable and progress:
            # Every round places a task or retires a full group (the least-loaded group always
            # qualifies); the flag only guards against a future edit breaking that.
            progress = False
            remaining = count - scheduled
            total = sum(branch.tasks for branch in usable.values()) + remaining
            desired, remainder = divmod(total, len(usable))
            # Least-loaded groups first, so they get the remainder; key order breaks ties
            # (Swarm walks a Go map here, which is random).
            for key, branch in sorted(usable.items(), key=lambda item: (item[1].tasks, item[0])):
                if scheduled == count:
                    break
                if branch.tasks < desired or (branch.tasks == desired and remainder > 0):
                    wanted = desired - branch.tasks + (1 if remainder > 0 else 0)
                    wanted = min(wanted, count - scheduled)
                    placed = branch.schedule(wanted, cursor)
                    scheduled += placed
                    progress = True
                    if placed < wanted:
                        del usable[key]  # full: its tasks leave the even-out total next round
                    elif remainder > 0:
                        remainder -= 1
        self.tasks += scheduled
        return scheduled

    def _fill(self, count: int, cursor: Cursor) -> int:
        heap = self.heap
        tasks = cursor.tasks
        placements = cursor.placements
        recheck = cursor.pipeline.recheck
        service = cursor.service
        replace, pop, append = heapq.heapreplace, heapq.heappop, placements.append
        start = position = cursor.next
        end = min(start + count, len(tasks))
        # The hot loop of the scheduler: keep it to local names and one heap operation per task.
        while position < end and heap:
            _, _, node_id, seq, info = heap[0]
            task = tasks[position]
            position += 1
            info.add_task(task)
            append(Placement(task.id, node_id))
            if recheck(info):
                replace(heap, (info.tasks_by_service[service], info.total_tasks, node_id, seq, info))
            else:
                pop(heap)  # full for this spec (resources, ports, max replicas)
        cursor.next = position
        placed = position - start
        self.tasks += placed
        return placed


def build_tree(
    nodes: Sequence[NodeInfo],
    preferences: Sequence[Preference],
    pipeline: Pipeline,
    service: str,
    limit: int,
) -> Branch:
    """Group ``nodes`` by the preferences' label values, keeping only pipeline-passing nodes as candidates."""
    root = Branch()
    process = pipeline.process
    for info in nodes:
        own = info.tasks_by_service.get(service, 0)
        branch = root
        for preference in preferences:
            branch.tasks += own
            value = preference.value(info.node)
            child = branch.children.get(value)
            if child is None:
                child = branch.children[value] = Branch()
            branch = child
        branch.tasks += own
        if process(info):
            branch.candidates.append(info)
    root.prepare(service, limit)
    return root
