"""What every node already holds, and which tasks wait for a node, kept as the store applies.

The scheduler driver used to rebuild both on every tick from every task in the store: at
100,000 tasks on 1,000 nodes a tick took most of a second of the leader's loop (one
``NodeInfo.add_task`` per running task), and the orchestrator's pieces of 500 new tasks cause
a tick each. ``NodeLoads`` listens to the store's applies (``ObjectStore.listen``), so what it
holds is never behind the view, and updates per-node totals by the difference each task
change makes: a tick costs O(nodes + pending tasks), whatever the number of running tasks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shoal import placement
from shoal.proto import objects_pb2 as pb
from shoal.roles.scheduler import NodeInfo
from shoal.store.memory import DELETE, Event, ObjectStore
from shoal.store.pieces import TaskIndexInPieces, add_count


def unassigned(task: pb.Task) -> bool:
    """A task the scheduler must place (or, for a global task created for one node, confirm
    on that node): not yet ASSIGNED, still wanted."""
    return task.status.state <= pb.PENDING and task.desired_state <= pb.RUNNING


@dataclass
class _Load:
    """The tasks occupying one node (``placement``'s rule), as ``NodeInfo`` counts them."""

    tasks_by_service: Counter[str] = field(default_factory=Counter)
    total_tasks: int = 0
    nano_cpus: int = 0
    memory_bytes: int = 0
    generic: Counter[str] = field(default_factory=Counter)
    host_ports: Counter[tuple[int, int]] = field(default_factory=Counter)

    def change(self, task: pb.Task, sign: int) -> None:
        """Count ``task`` in (sign 1) or out (sign -1)."""
        service = self.tasks_by_service[task.service_id] + sign
        if service:
            self.tasks_by_service[task.service_id] = service
        else:
            del self.tasks_by_service[task.service_id]
        self.total_tasks += sign
        reservations = task.spec.resources.reservations
        self.nano_cpus += sign * reservations.nano_cpus
        self.memory_bytes += sign * reservations.memory_bytes
        for generic in reservations.generic:
            add_count(self.generic, generic.kind, sign * generic.value)
        if task.HasField("endpoint"):
            for port in task.endpoint.ports:
                if port.publish_mode == pb.PortConfig.HOST and port.published_port:
                    add_count(self.host_ports, (port.protocol, port.published_port), sign)


def _same_load(old: pb.Task, new: pb.Task) -> bool:
    """Whether ``new`` weighs on its node exactly as ``old`` did: the same node, occupying it
    or not alike, reserving the same. Four of a started task's five changes (ACCEPTED to
    RUNNING) are such, and counting each out and in again was most of this listener's work."""
    if old.node_id != new.node_id:
        return False
    occupies = placement._occupies_node(old)
    if occupies != placement._occupies_node(new):
        return False
    # Whole submessages compared (resources, endpoint): stricter than the reservations and the
    # ports, at a third of the cost of reaching down to them (a false "not the same" only
    # counts the task out and in again).
    return not occupies or (old.spec.resources == new.spec.resources and old.endpoint == new.endpoint)


class NodeLoads(TaskIndexInPieces):
    """Per-node totals of occupying tasks and the set of unassigned tasks, for the scheduler."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store)
        self._loads: dict[str, _Load] = {}
        self._unassigned: set[str] = set()

    def start(self) -> None:
        """Count what the store holds now and follow every change from here on (again: no-op).
        A new leader's scheduler counts in pieces instead (``start_in_pieces``): 100,000 tasks
        counted in one step were two thirds of a second of its loop."""
        if self._stop is None:
            self.restored()
            self._stop = self.store.listen(self)

    def _reset(self) -> None:
        self._loads = {}
        self._unassigned = set()

    # ------------------------------------------------------------------ ApplyListener

    def applied(self, events: list[Event]) -> None:
        for event in self._task_events(events):
            old: pb.Task | None = event.old
            if event.action == DELETE:
                self._leave(event.obj)
            elif old is None:
                self._enter(event.obj)
            elif not _same_load(old, event.obj):
                self._leave(old)
                self._enter(event.obj)
            elif unassigned(event.obj):  # the load is unchanged; only the pending set may be
                self._unassigned.add(old.id)
            else:
                self._unassigned.discard(old.id)

    def _enter(self, task: pb.Task) -> None:
        if task.node_id and placement._occupies_node(task):
            load = self._loads.get(task.node_id)
            if load is None:
                load = self._loads[task.node_id] = _Load()
            load.change(task, 1)
        if unassigned(task):
            self._unassigned.add(task.id)

    def _leave(self, task: pb.Task) -> None:
        if task.node_id and placement._occupies_node(task):
            load = self._loads[task.node_id]
            load.change(task, -1)
            if not load.total_tasks:
                del self._loads[task.node_id]
        self._unassigned.discard(task.id)

    # ------------------------------------------------------------------ reads

    def pending(self) -> list[pb.Task]:
        """Every task waiting for a node, as the view holds it now."""
        tasks = self.store.view.tasks.items
        return [tasks[task_id] for task_id in self._unassigned]

    def count_pending(self) -> int:
        """How many tasks wait for a node (``pending`` without building the list)."""
        return len(self._unassigned)

    def node_infos(self) -> dict[str, NodeInfo]:
        """What ``placement.build_node_infos`` would return for the view now, built from the
        totals (fresh objects: the scheduler's ``add_task`` calls change only this tick's)."""
        infos: dict[str, NodeInfo] = {}
        empty = _Load()
        for node in self.store.view.nodes.all():
            load = self._loads.get(node.id, empty)
            resources = node.description.resources
            generic = {g.kind: g.value for g in resources.generic}
            for kind, used in load.generic.items():
                generic[kind] = generic.get(kind, 0) - used
            infos[node.id] = NodeInfo(
                node=node,
                tasks_by_service=dict(load.tasks_by_service),
                total_tasks=load.total_tasks,
                available_nano_cpus=resources.nano_cpus - load.nano_cpus,
                available_memory_bytes=resources.memory_bytes - load.memory_bytes,
                used_host_ports=set(load.host_ports),
                available_generic=generic,
            )
        return infos
