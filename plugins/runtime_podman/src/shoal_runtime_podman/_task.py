"""Engine-independent facts about a task's container: its name, labels and limits.

Kept apart from the engine calls so that the naming and labelling rules (which the agent
relies on to re-adopt containers) are unit-testable without an engine.
"""

from __future__ import annotations

import math

from shoal.proto import objects_pb2 as pb
from shoal.roles.runtime import (
    DEFAULT_STOP_GRACE_SECONDS,
    LABEL_NODE_ID,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_SLOT,
    LABEL_TASK_ID,
    RuntimeError_,
)

#: Engine architecture names as Swarm reports them (``uname -m`` style).
_ARCH = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "386": "i386", "arm": "armv7l"}


def check(task: pb.Task) -> None:
    """Refuse a task the runtime cannot name or run, with a one-line reason."""
    if not task.id:
        raise RuntimeError_("task has no ID")
    if not task.node_id:
        raise RuntimeError_(f"task {task.id} has no node ID")
    if not task.spec.container.image:
        raise RuntimeError_(f"task {task.id} has no container image")


def container_name(task: pb.Task) -> str:
    """``<service name>.<slot>.<task id>`` like Swarm; a global task (slot 0) uses its node ID."""
    service = task.service_annotations.name or task.service_id or "task"
    slot = str(task.slot) if task.slot else task.node_id
    return f"{service}.{slot}.{task.id}"


def labels(task: pb.Task) -> dict[str, str]:
    """The spec's container labels plus the shoal labels (which win over user labels)."""
    result = dict(task.spec.container.labels)
    result.update(
        {
            LABEL_NODE_ID: task.node_id,
            LABEL_TASK_ID: task.id,
            LABEL_SERVICE_ID: task.service_id,
            LABEL_SERVICE_NAME: task.service_annotations.name,
            LABEL_SLOT: str(task.slot),
        }
    )
    return result


def limits(task: pb.Task) -> tuple[int, int]:
    """``(nano_cpus, memory_bytes)`` limits, 0 where unset."""
    if not task.spec.HasField("resources") or not task.spec.resources.HasField("limits"):
        return 0, 0
    found = task.spec.resources.limits
    return max(found.nano_cpus, 0), max(found.memory_bytes, 0)


def stop_seconds(grace_seconds: float) -> int:
    """The engines take whole seconds; round up so a grace period is never cut short."""
    if grace_seconds < 0 or math.isnan(grace_seconds):
        grace_seconds = DEFAULT_STOP_GRACE_SECONDS
    return math.ceil(grace_seconds)


def normalise_arch(arch: str) -> str:
    """Report architectures like Swarm does: x86_64, aarch64, ..."""
    return _ARCH.get(arch, arch)
