"""The fake engine's state: containers as records, images as names, all in this process.

One ``FakeEngine`` plays one dockerd. Engines are found by name (``engine_named``), so two
providers given the same ``runtime.engine`` share containers, as two daemons on one dockerd
do, and a daemon restarted in the same process finds its containers again (re-adoption).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from shoal.plugin import LABEL_NODE_ID, LABEL_TASK_ID, LogLine, objects_pb2

from shoal_runtime_fake.script import Shell

CREATED, RUNNING, EXITED = "created", "running", "exited"


@dataclass(eq=False)
class FakeContainer:
    """One container: its identity, state, output and (while running) its interpreted process."""

    id: str
    name: str
    labels: dict[str, str]
    task: objects_pb2.Task
    shell: Shell
    state: str = CREATED
    exit_code: int | None = None
    error: str = ""
    pid: int = 0
    started_at: float = 0.0
    logs: list[LogLine] = field(default_factory=list)
    #: Background work of a running container (its process, exit timer, health monitor).
    jobs: list[asyncio.Task[None]] = field(default_factory=list)
    _exited: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def emit(self, stream: str, text: str) -> None:
        """A line of output (what the process printed)."""
        self.logs.append(
            LogLine(
                task_id=self.labels.get(LABEL_TASK_ID, ""), text=text, stream=stream, timestamp=time.time()
            )
        )
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
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


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
    _by_name: dict[str, FakeContainer] = field(default_factory=dict)
    #: (node ID, task ID) label values -> the containers with them, oldest first.
    _by_task: dict[tuple[str, str], list[FakeContainer]] = field(default_factory=dict)

    def new_id(self) -> str:
        return secrets.token_hex(32)

    def next_pid(self) -> int:
        return next(self._pids)

    def add(self, container: FakeContainer) -> None:
        """A new container (its name is not taken: the runtime looked first)."""
        self.containers[container.id] = container
        self._by_name.setdefault(container.name, container)
        self._by_task.setdefault(_task_key(container), []).append(container)

    def by_name(self, name: str) -> FakeContainer | None:
        return self._by_name.get(name)

    def by_labels(self, node_id: str, task_id: str) -> FakeContainer | None:
        found = self._by_task.get((node_id, task_id))
        return found[0] if found else None

    def of_node(self, node_id: str) -> list[FakeContainer]:
        return [c for c in self.containers.values() if c.labels.get(LABEL_NODE_ID) == node_id]

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


def _task_key(container: FakeContainer) -> tuple[str, str]:
    return container.labels.get(LABEL_NODE_ID, ""), container.labels.get(LABEL_TASK_ID, "")


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
