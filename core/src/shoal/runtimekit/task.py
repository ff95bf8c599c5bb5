"""Engine-independent facts about a task's container: its name, labels, limits, mounts and
healthcheck.

Kept apart from the engine calls so that the naming and labelling rules (which the agent
relies on to re-adopt containers) are unit-testable without an engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shoal.proto import objects_pb2 as pb
from shoal.roles.runtime import (
    DEFAULT_STOP_GRACE_SECONDS,
    LABEL_NODE_ID,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_SLOT,
    LABEL_TASK_ID,
    ContainerRef,
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
    check_mounts(task)
    requested_health(task)


def check_mounts(task: pb.Task) -> None:
    """Refuse a mount the engines would reject less clearly (or, for tmpfs, silently accept)."""
    for mount in task.spec.container.mounts:
        kind = pb.Mount.Type.Name(mount.type).lower()
        where = f"task {task.id}: {kind} mount {mount.target or '(no target)'}"
        if not mount.target.startswith("/"):
            raise RuntimeError_(f"{where}: target must be an absolute path inside the container")
        if mount.type == pb.Mount.BIND and not mount.source.startswith("/"):
            raise RuntimeError_(f"{where}: source must be an absolute host path, got {mount.source!r}")
        if mount.type == pb.Mount.TMPFS and mount.source:
            raise RuntimeError_(f"{where}: a tmpfs mount takes no source, got {mount.source!r}")
        if mount.tmpfs_size_bytes < 0:
            raise RuntimeError_(f"{where}: tmpfs size must not be negative")
        if mount.tmpfs_size_bytes and mount.type != pb.Mount.TMPFS:
            raise RuntimeError_(f"{where}: only a tmpfs mount takes a size")


#: What the engines (and Swarm) use for a healthcheck field left at 0.
DEFAULT_HEALTH_INTERVAL = 30.0
DEFAULT_HEALTH_TIMEOUT = 30.0
DEFAULT_HEALTH_RETRIES = 3
#: The error of a task whose container turned unhealthy, as Swarm's executor words it.
UNHEALTHY = "unhealthy container"
_NANOS = 1_000_000_000


def _nanos(seconds: float) -> int:
    return round(seconds * _NANOS)


def requested_health(task: pb.Task) -> dict[str, Any] | None:
    """The spec's healthcheck in the engines' shape (``Test``, durations in ns), or None to
    keep the image's own. ``["NONE"]`` goes over as is: both engines read it as "none"."""
    spec = task.spec.container
    if not spec.HasField("healthcheck") or not spec.healthcheck.test:
        return None
    health = spec.healthcheck
    test = list(health.test)
    where = f"task {task.id}: healthcheck"
    if test == ["NONE"]:
        return {"Test": test}
    if test[0] == "CMD-SHELL" and len(test) != 2:
        raise RuntimeError_(f"{where}: CMD-SHELL takes exactly one command string, got {test[1:]!r}")
    if test[0] not in ("CMD", "CMD-SHELL") or len(test) < 2:
        raise RuntimeError_(
            f'{where} test must be ["NONE"], ["CMD-SHELL", cmd] or ["CMD", ...], got {test!r}'
        )
    for name, value in (
        ("interval", health.interval),
        ("timeout", health.timeout),
        ("start_period", health.start_period),
    ):
        if not value >= 0 or math.isinf(value):
            raise RuntimeError_(f"{where} {name} must be a finite number of seconds >= 0, got {value}")
    return {
        "Test": test,
        "Interval": _nanos(health.interval),
        "Timeout": _nanos(health.timeout),
        "Retries": int(health.retries),
        "StartPeriod": _nanos(health.start_period),
    }


@dataclass(frozen=True)
class Health:
    """A container's effective healthcheck timing, engine defaults filled in (seconds)."""

    interval: float
    timeout: float
    retries: int
    start_period: float


def effective_health(config: dict[str, Any] | None) -> Health | None:
    """The healthcheck a container really has (``Config.Healthcheck`` from inspecting it: the
    spec's, or else the image's), None when it has none or ``NONE``."""
    test = (config or {}).get("Test") or []
    if not test or test[0] == "NONE":
        return None
    assert config is not None
    return Health(
        interval=(config.get("Interval") or 0) / _NANOS or DEFAULT_HEALTH_INTERVAL,
        timeout=(config.get("Timeout") or 0) / _NANOS or DEFAULT_HEALTH_TIMEOUT,
        retries=int(config.get("Retries") or 0) or DEFAULT_HEALTH_RETRIES,
        start_period=(config.get("StartPeriod") or 0) / _NANOS,
    )


def exited_before_healthy(code: int, error: str) -> str:
    """``start``'s error for a container that ended while its healthcheck was still pending."""
    message = f"container exited with code {code} before it was healthy"
    return f"{message}: {error}" if error else message


def listed_container(entry: dict[str, Any], *, exit_code: int | None, pid: int = 0) -> ContainerRef:
    """A container as an engine's list (``/containers/json``, docker's and libpod's alike)
    shows it, found again through the labels ``labels`` gave it."""
    labels = entry.get("Labels") or {}
    return ContainerRef(
        task_id=labels.get(LABEL_TASK_ID, ""),
        container_id=entry["Id"],
        service_id=labels.get(LABEL_SERVICE_ID, ""),
        node_id=labels.get(LABEL_NODE_ID, ""),
        running=entry.get("State") == "running",
        exit_code=exit_code,
        pid=pid,
    )


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


#: Where a task on a swarm network asks its names: the network provider's resolver, bound to
#: this address inside the task's own network namespace (as Docker's embedded DNS is).
SWARM_RESOLVER = "127.0.0.11"


def dns_servers(task: pb.Task) -> list[str]:
    """The container's ``nameserver`` lines: the swarm resolver for a task with networks (it
    answers service names and forwards the rest to the node's resolvers, as Docker's embedded
    DNS does); else the service's ``--dns`` servers, or none so that the engine's default
    applies."""
    if task.networks:
        return [SWARM_RESOLVER]
    return list(task.spec.container.dns_config.nameservers)


def nameservers(task: pb.Task) -> list[str]:
    """Every ``nameserver`` line: the swarm resolver first for a task with networks (so service
    names resolve), then the service's ``--dns`` servers. Unlike Docker's embedded DNS, the swarm
    resolver forwards other names to the node's resolvers, not to ``--dns`` ones: those are asked
    when it fails (the resolver library moves on to the next nameserver)."""
    servers = dns_servers(task) + list(task.spec.container.dns_config.nameservers)
    return list(dict.fromkeys(servers))


def extra_hosts(task: pb.Task) -> list[str]:
    """The spec's ``IP HOST`` lines (Swarm's form) as the engines' ``HOST:IP``."""
    result = []
    for line in task.spec.container.hosts:
        address, _, host = line.partition(" ")
        result.append(f"{host.strip()}:{address}")
    return result


def ulimits(task: pb.Task) -> list[dict[str, Any]]:
    """The spec's ulimits as ``{"Name", "Soft", "Hard"}`` (docker's HostConfig shape)."""
    return [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in task.spec.container.ulimits]


def pids_limit(task: pb.Task) -> int:
    """``--limit-pids``; 0 = unlimited (the engine's default)."""
    return max(task.spec.resources.limits.pids, 0)
