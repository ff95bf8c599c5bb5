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
    """Containers and images of one fake engine."""

    name: str
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    _pids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def new_id(self) -> str:
        return secrets.token_hex(32)

    def next_pid(self) -> int:
        return next(self._pids)

    def by_name(self, name: str) -> FakeContainer | None:
        for container in self.containers.values():
            if container.name == name:
                return container
        return None

    def by_labels(self, node_id: str, task_id: str) -> FakeContainer | None:
        for container in self.containers.values():
            labels = container.labels
            if labels.get(LABEL_NODE_ID) == node_id and labels.get(LABEL_TASK_ID) == task_id:
                return container
        return None

    def of_node(self, node_id: str) -> list[FakeContainer]:
        return [c for c in self.containers.values() if c.labels.get(LABEL_NODE_ID) == node_id]

    def delete(self, container: FakeContainer) -> None:
        container.finish(137, "removed")
        self.containers.pop(container.id, None)


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
