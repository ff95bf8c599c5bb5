"""The scheduler role: decide which node each pending task runs on.

The kernel's scheduler driver keeps a ``NodeInfo`` per node (the live node object plus what is
already placed there), batches pending tasks by (service, spec version) and asks the provider
for placements. Filters (readiness, constraints, resources, ports, max replicas) live in
``shoal.placement`` so that every scheduler applies them the same way; the provider chooses
among the nodes that pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from shoal.proto import objects_pb2 as pb

if TYPE_CHECKING:  # shoal.placement imports NodeInfo from here
    from shoal.placement import Filter


@dataclass
class NodeInfo:
    """A node as the scheduler sees it.

    ``tasks_by_service`` and ``total_tasks`` count tasks with desired state <= RUNNING (as
    Swarm does, so tasks assigned but not yet running count). ``available`` is the node's
    resources minus the reservations of those tasks (``available_generic``: per kind of
    generic resource, ``--generic-resource``). ``used_host_ports`` holds ``(protocol, port)``
    pairs bound in host mode.
    """

    node: pb.Node
    tasks_by_service: dict[str, int] = field(default_factory=dict)
    total_tasks: int = 0
    available_nano_cpus: int = 0
    available_memory_bytes: int = 0
    used_host_ports: set[tuple[int, int]] = field(default_factory=set)
    available_generic: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.node.id

    def add_task(self, task: pb.Task) -> None:
        """Account for ``task`` being placed here (reservations, counts, host ports)."""
        self.tasks_by_service[task.service_id] = self.tasks_by_service.get(task.service_id, 0) + 1
        self.total_tasks += 1
        reservations = task.spec.resources.reservations
        self.available_nano_cpus -= reservations.nano_cpus
        self.available_memory_bytes -= reservations.memory_bytes
        for generic in reservations.generic:
            self.available_generic[generic.kind] = self.available_generic.get(generic.kind, 0) - generic.value
        if not task.HasField("endpoint"):  # the common case; skips a hot protobuf walk
            return
        for port in task.endpoint.ports:
            if port.publish_mode == pb.PortConfig.HOST and port.published_port:
                self.used_host_ports.add((port.protocol, port.published_port))

    def remove_task(self, task: pb.Task) -> None:
        """Undo ``add_task`` for a task that stopped or moved away."""
        count = self.tasks_by_service.get(task.service_id, 0) - 1
        if count > 0:
            self.tasks_by_service[task.service_id] = count
        else:
            self.tasks_by_service.pop(task.service_id, None)
        self.total_tasks -= 1
        reservations = task.spec.resources.reservations
        self.available_nano_cpus += reservations.nano_cpus
        self.available_memory_bytes += reservations.memory_bytes
        for generic in reservations.generic:
            self.available_generic[generic.kind] = self.available_generic.get(generic.kind, 0) + generic.value
        for port in task.endpoint.ports:
            if port.publish_mode == pb.PortConfig.HOST and port.published_port:
                self.used_host_ports.discard((port.protocol, port.published_port))


@dataclass
class Placement:
    """The decision for one task: a node ID, or ``node_id=""`` with the reason none fits.

    ``reason`` is shown in ``service ps`` as ``no suitable node (<reason>)``.
    """

    task_id: str
    node_id: str = ""
    reason: str = ""


@runtime_checkable
class SchedulerProvider(Protocol):
    """Places a batch of tasks that share one service and spec version."""

    role: ClassVar[str]  # "scheduler"
    api_version: ClassVar[int]  # 2 (2 added ``filters`` to ``schedule``)

    async def schedule(
        self, tasks: Sequence[pb.Task], nodes: Sequence[NodeInfo], filters: Sequence[Filter]
    ) -> list[Placement]:
        """Return one ``Placement`` per task, in any order.

        ``tasks`` may hold several batches (group them with ``shoal.placement.group_batches``);
        every task must be placed unless no node can take it. ``nodes`` is every node in the
        cluster, eligible or not. ``filters`` are the extension node filters installed plugins
        contributed (``shoal_node_filters``): the provider must only pick nodes that pass
        ``shoal.placement.Pipeline(filters)`` for the task, and must call ``NodeInfo.add_task``
        on the node it picks so later tasks see it. The driver commits all placements of a
        tick in one store transaction.
        """
