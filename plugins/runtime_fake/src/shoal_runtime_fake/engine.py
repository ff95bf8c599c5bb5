"""The fake engine's state: containers as records, images as names, all in this process.

One ``FakeEngine`` plays one dockerd. Engines are found by name (``engine_named``), so two
providers given the same ``runtime.engine`` share containers, as two daemons on one dockerd
do, and a daemon restarted in the same process finds its containers again (re-adoption).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from shoal.plugin import LogLine, objects_pb2
from shoal.runtimekit import task as _task

from shoal_runtime_fake.script import Shell

CREATED, RUNNING, EXITED = "created", "running", "exited"


@dataclass(eq=False)
class FakeContainer:
    """One container: its identity, state, output and (while running) its interpreted process.

    Its labels and its shell are made from its task when first asked for, not at the create:
    a service's container is listed and stopped by its node and task IDs (read from the task)
    and most never run a script, and making both for each create was a third of a hollow
    node's ``prepare``."""

    id: str
    name: str
    task: objects_pb2.Task
    state: str = CREATED
    exit_code: int | None = None
    error: str = ""
    pid: int = 0
    started_at: float = 0.0
    logs: list[LogLine] = field(default_factory=list)
    #: Background work of a running container (its process, exit timer, health monitor).
    jobs: list[asyncio.Task[None]] = field(default_factory=list)
    _exited: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event | None = None

    @property
    def node_id(self) -> str:
        return self.task.node_id

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def service_id(self) -> str:
        return self.task.service_id

    @functools.cached_property
    def labels(self) -> dict[str, str]:
        """The spec's labels and shoal's (``runtimekit.task.labels``), as the engine keeps them."""
        return _task.labels(self.task)

    @functools.cached_property
    def shell(self) -> Shell:
        """What its process and health checks run in: the task's environment, workdir, user
        and hostname (the container ID's first 12 characters when the spec names none)."""
        spec = self.task.spec.container
        return Shell(
            env=dict(entry.partition("=")[::2] for entry in spec.env),
            emit=self.emit,
            workdir=spec.dir or "/",
            hostname=spec.hostname or self.id[:12],
            user=spec.user,
        )

    def trap(self, signal: str) -> str | None:
        """The body of the shell's trap for ``signal`` ("" ignores it), None without one (a
        container whose shell never ran a script has no traps)."""
        shell = self.__dict__.get("shell")
        return shell.traps.get(signal) if shell is not None else None

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def emit(self, stream: str, text: str) -> None:
        """A line of output (what the process printed)."""
        self.logs.append(LogLine(task_id=self.task_id, text=text, stream=stream, timestamp=time.time()))
        self._wake()

    def finish(self, code: int, error: str = "") -> None:
        """The process ended (on its own, by a signal, or killed). Later calls change nothing."""
        if self.state == EXITED:
            return
        self.state, self.exit_code, self.error = EXITED, code, error
        current = asyncio.current_task()
        for job in self.jobs:
            if job is not current:
                job.cancel()
        self.jobs.clear()
        self._exited.set()
        self._wake()

    async def exited(self) -> None:
        await self._exited.wait()

    async def changed(self) -> None:
        """Until the next line of output or the exit."""
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def _wake(self) -> None:
        """Wake the readers waiting in ``changed``; the next reader gets a new event (none is
        made while nobody follows the logs, which is nearly always)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None


@dataclass(eq=False)
class FakeEngine:
    """Containers and images of one fake engine.

    Containers are found by name and by their node and task labels through indexes, as a
    real engine finds them, not by walking every container: every call of the runtime looks
    its task's container up, and a walk per call made a node's work grow with the square of
    its tasks (a hollow node with 100 tasks, an in-process node with thousands). Containers
    come and go through ``add`` and ``delete``, which keep the indexes."""

    name: str
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    _pids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    _ids: random.Random = field(default_factory=random.Random)
    _by_name: dict[str, FakeContainer] = field(default_factory=dict)
    #: (node ID, task ID) label values -> the containers with them, oldest first.
    _by_task: dict[tuple[str, str], list[FakeContainer]] = field(default_factory=dict)
    #: Node ID label value -> its containers by ID, oldest first: a node's agent lists its
    #: containers after removals (a sweep a second while a big service goes), and a walk of
    #: the whole engine per list is every node's containers when nodes share an engine.
    _by_node: dict[str, dict[str, FakeContainer]] = field(default_factory=dict)

    def new_id(self) -> str:
        """64 hex digits, as an engine's container ID (unique, not secret: drawn from a
        generator seeded once, not from the OS per container as ``secrets`` would)."""
        return f"{self._ids.getrandbits(256):064x}"

    def next_pid(self) -> int:
        return next(self._pids)

    def add(self, container: FakeContainer) -> None:
        """A new container (its name is not taken: the runtime looked first)."""
        self.containers[container.id] = container
        self._by_name.setdefault(container.name, container)
        self._by_task.setdefault(_task_key(container), []).append(container)
        self._by_node.setdefault(container.node_id, {})[container.id] = container

    def by_name(self, name: str) -> FakeContainer | None:
        return self._by_name.get(name)

    def by_labels(self, node_id: str, task_id: str) -> FakeContainer | None:
        found = self._by_task.get((node_id, task_id))
        return found[0] if found else None

    def of_node(self, node_id: str) -> list[FakeContainer]:
        """The node's containers, oldest first."""
        return list(self._by_node.get(node_id, {}).values())

    def delete(self, container: FakeContainer) -> None:
        container.finish(137, "removed")
        if self.containers.pop(container.id, None) is None:
            return
        if self._by_name.get(container.name) is container:
            del self._by_name[container.name]
        key = _task_key(container)
        same = self._by_task.get(key, [])
        if container in same:
            same.remove(container)
        if not same:
            self._by_task.pop(key, None)
        of_node = self._by_node.get(container.node_id)
        if of_node is not None:
            of_node.pop(container.id, None)
            if not of_node:
                del self._by_node[container.node_id]


def _task_key(container: FakeContainer) -> tuple[str, str]:
    return container.node_id, container.task_id


_ENGINES: dict[str, FakeEngine] = {}
_private = itertools.count(1)


def engine_named(name: str) -> FakeEngine:
    """The process's engine called ``name`` (made on first use); "" makes a new private one."""
    if not name:
        return FakeEngine(name=f"private-{next(_private)}")
    engine = _ENGINES.get(name)
    if engine is None:
        engine = _ENGINES[name] = FakeEngine(name=name)
    return engine


def forget_engine(name: str) -> None:
    """Drop a named engine (a test cleaning up after itself)."""
    _ENGINES.pop(name, None)
