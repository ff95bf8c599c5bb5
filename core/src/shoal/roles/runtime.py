"""The runtime role: run a task as a container on this node's engine.

The agent owns the task state machine; the runtime only performs operations and reports
facts (exit codes, errors). It never decides a task's state.

Every container a runtime creates carries the labels in ``TASK_LABELS`` so that the agent can
find and re-adopt its containers after a restart, and so that several nodes can share one
engine: a node only ever lists or touches containers labelled with its own node ID.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from shoal.proto import objects_pb2 as pb

LABEL_NODE_ID = "io.shoal.node.id"
LABEL_TASK_ID = "io.shoal.task.id"
LABEL_SERVICE_ID = "io.shoal.service.id"
LABEL_SERVICE_NAME = "io.shoal.service.name"
LABEL_SLOT = "io.shoal.task.slot"
TASK_LABELS = (LABEL_NODE_ID, LABEL_TASK_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME)

#: Grace period used when a task spec leaves it unset (Swarm's default).
DEFAULT_STOP_GRACE_SECONDS = 10.0

#: Optional class attribute of a runtime provider class: how many engine operations
#: (``prepare``, ``start``, ``shutdown``, ``remove``, ``list_containers``, ``find``) its engine
#: handles best at once, e.g. ``engine_concurrency = 16``. The agent's engine gate
#: (``shoal.agent.enginegate``) is that wide unless the operator says otherwise
#: (``--max-concurrent-engine-calls``); a runtime that declares nothing gets the kernel's
#: default (``shoal.agent.enginelimits``). It is the runtime's to say because engines differ:
#: dockerd was no faster all at once than 8 wide, podman's REST service was.
ENGINE_CONCURRENCY_ATTR = "engine_concurrency"


def declared_engine_concurrency(provider_class: type) -> int | None:
    """The engine concurrency ``provider_class`` declares (``None`` when it declares none).

    Read from the class, so the loader can check it when it checks ``role`` and
    ``api_version``. Raises ``TypeError`` (one line) for a malformed declaration: it must be
    an ``int`` of at least 1.
    """
    declared = getattr(provider_class, ENGINE_CONCURRENCY_ATTR, None)
    if declared is None:
        return None
    if not isinstance(declared, int) or isinstance(declared, bool) or declared < 1:
        raise TypeError(f"{ENGINE_CONCURRENCY_ATTR} must be an int of at least 1, got {declared!r}")
    return declared


class RuntimeError_(Exception):
    """An operation failed. ``temporary`` errors are retried; others fail the task.

    The message is the engine's own words where there are some (it is shown in ``service ps``).
    """

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass
class EngineInfo:
    """What the node reports about itself through its runtime."""

    hostname: str
    os: str
    arch: str
    nano_cpus: int
    memory_bytes: int
    engine_version: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ExitStatus:
    """How a container ended. ``error`` is the engine's message, empty for a clean exit."""

    exit_code: int
    error: str = ""


@dataclass
class ContainerRef:
    """A container the runtime created for a task, as found on the engine."""

    task_id: str
    container_id: str
    service_id: str
    node_id: str
    running: bool
    exit_code: int | None = None
    pid: int = 0


@dataclass
class LogLine:
    """One line of a task's output. ``stream`` is ``"stdout"`` or ``"stderr"``."""

    task_id: str
    text: str
    stream: str = "stdout"
    timestamp: float = 0.0


#: Where a task's secrets appear in its container (Swarm's path).
SECRETS_DIR = "/run/secrets"


@dataclass(frozen=True)
class TaskFile:
    """A secret or config file a task's container must see, with its value.

    The agent builds these from the values its managers sent with the task (memory only) and
    hands them to ``prepare``; they are never part of the ``pb.Task`` (which the agent keeps
    on disk). ``target`` is absolute: ``/run/secrets/<name>`` for a secret. The runtime must
    keep ``data`` off disk (a tmpfs), read-only to the container, owned ``uid``:``gid`` with
    permission bits ``mode``.
    """

    target: str
    data: bytes = field(repr=False)
    uid: int = 0
    gid: int = 0
    mode: int = 0o444
    secret: bool = True


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for pulling a task's image (``service create --with-registry-auth``): docker's
    AuthConfig as ``docker login`` stored it on the client. Held in memory only; never logged."""

    username: str = ""
    password: str = field(default="", repr=False)
    server_address: str = ""
    identity_token: str = field(default="", repr=False)

    def docker_auth_config(self) -> dict[str, str]:
        """The AuthConfig mapping docker's and podman's pull APIs take (empty values left out)."""
        fields = {
            "username": self.username,
            "password": self.password,
            "serveraddress": self.server_address,
            "identitytoken": self.identity_token,
        }
        return {key: value for key, value in fields.items() if value}


@runtime_checkable
class RuntimeProvider(Protocol):
    """Drives one container engine for one node."""

    role: ClassVar[str]  # "runtime"
    api_version: ClassVar[int]  # 2 (2 added ``files`` to ``prepare``)

    async def describe(self) -> EngineInfo:
        """Hostname, platform, resources and engine version of this node's engine.

        Raises ``RuntimeError_`` naming the endpoint when the engine cannot be reached.
        """

    async def prepare(
        self, task: pb.Task, files: Sequence[TaskFile] = (), *, registry_auth: RegistryAuth | None = None
    ) -> None:
        """Make the image available (per ``task.spec.container.pull_policy``) and create the
        container, labelled with ``TASK_LABELS``, with the spec's mounts (``bind``: a host path;
        ``volume``: a named volume, created if missing; ``tmpfs``) and healthcheck (empty test =
        the image's own, ``["NONE"]`` = none). Idempotent: an existing container for the task is
        reused. A missing image with pull policy ``never``, or a failed pull, raises
        ``RuntimeError_`` with the engine's message.

        Ports in ``task.endpoint.ports`` with ``publish_mode`` HOST (``--publish mode=host``)
        are bound on this node: ``published_port`` on every host address to ``target_port`` in
        the container (0: the engine picks), as the engine's port bindings
        (``shoal.runtimekit.hostports``). Ingress ports are the network plugin's, not yours.

        ``files`` (the task's secrets and configs) must be readable in the container at their
        targets before its process starts, from memory (a tmpfs), read-only, with their owner
        and mode; ``remove`` must make them go away. ``shoal.runtimekit.taskfiles`` does it for
        an engine on the same host.

        ``registry_auth`` (given only for a service made ``--with-registry-auth``; the agent
        calls ``prepare`` without it otherwise) must be used for the pull and kept in memory:
        never written to a file, never logged.
        """

    async def start(self, task: pb.Task) -> ContainerRef:
        """Start the prepared container. Idempotent for a running container.

        If the container has a healthcheck, return only once it reports healthy (the task stays
        STARTING meanwhile, as with Swarm's executor); if it turns unhealthy or exits first, stop
        it and raise ``RuntimeError_("unhealthy container")`` (or the exit) — the task fails.
        """

    async def wait(self, task: pb.Task) -> ExitStatus:
        """Block until the container exits and return how it ended.

        With a healthcheck, also return when the container turns unhealthy: the runtime stops
        it and reports ``ExitStatus(exit_code, error="unhealthy container")``.
        """

    async def shutdown(self, task: pb.Task, grace_seconds: float) -> None:
        """Stop the container: the stop signal, then kill after ``grace_seconds``.
        Does nothing if it is not running or does not exist."""

    async def remove(self, task: pb.Task) -> None:
        """Remove the container (and anything prepare made for it). Missing is fine.

        Found by its name or, failing that, by its node and task labels: the agent removes
        stray containers knowing only ``task.id``, ``task.node_id`` and ``task.service_id``.
        """

    async def list_containers(self, node_id: str) -> list[ContainerRef]:
        """Every container on the engine labelled with ``node_id``, running or not."""

    def logs(self, task: pb.Task, *, follow: bool, tail: int | None) -> AsyncIterator[LogLine]:
        """The container's output, oldest first; with ``follow`` it keeps streaming."""

    async def close(self) -> None:
        """Release connections. Containers are left as they are."""
