"""Which nodes a service's mode puts its tasks on.

Shared by the orchestrator (which reconciles global services) and the restart supervisor (which
does not move a global task off its node): a module of its own so neither imports the other.
"""

from __future__ import annotations

from shoal import placement
from shoal.manager.tasks import node_unavailable
from shoal.proto import objects_pb2 as pb

__all__ = ["global_eligible", "is_global"]


def is_global(service: pb.Service) -> bool:
    return service.spec.WhichOneof("mode") == "global"


def global_eligible(node: pb.Node, service: pb.Service) -> bool:
    """A global service runs on every node that is up, not drained, and meets its constraints."""
    if node_unavailable(node):
        return False
    try:
        constraints = placement.parse_constraints(service.spec.task.placement.constraints)
    except ValueError:
        return False
    return all(c.matches(node) for c in constraints)
