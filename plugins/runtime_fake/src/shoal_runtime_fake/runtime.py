"""``FakeRuntime``: the runtime role with containers as in-memory state (``engine.py``).

It keeps the contract of ``shoal.roles.RuntimeProvider`` where the contract is logic (naming,
labels, pull policies, idempotence, exit codes, stop signals and traps, removal by labels,
listing by node, logs with tail and follow, health checks that pass or fail) and stands in for
what needs a kernel (filesystems, mounts, cgroups, ports) by doing nothing, which is why the
conformance tests about those are skipped for it (``tests/test_fake_conformance.py`` says which
and why). Settings: ``options.FakeOptions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import ClassVar

from shoal.plugin import (
    ContainerRef,
    EngineInfo,
    ExitStatus,
    LogLine,
    RegistryAuth,
    RuntimeError_,
    TaskFile,
    objects_pb2,
)
from shoal.runtimekit import task as _task

from shoal_runtime_fake.engine import CREATED, RUNNING, FakeContainer, FakeEngine, engine_named
from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.script import SIGNALS, parse, program_of, runs_on, signal_name, statements

pb = objects_pb2
VERSION = "0.1.0"


def _check_bind_sources(task: objects_pb2.Task) -> None:
    """A bind mount of a host path that does not exist fails the create, as dockerd's does
    (one stat per bind mount: not worth a thread)."""
    for mount in task.spec.container.mounts:
        if mount.type == pb.Mount.BIND and not Path(mount.source).exists():
            raise RuntimeError_(
                f'invalid mount config for type "bind": bind source path does not exist: {mount.source}'
            )


class FakeRuntime:
    """Drives one fake engine for one node."""

    role: ClassVar[str] = "runtime"
    api_version: ClassVar[int] = 2

    def __init__(self, options: FakeOptions | None = None, *, engine: FakeEngine | None = None) -> None:
        self.options = options or FakeOptions()
        self.engine = engine or engine_named(self.options.engine)
        self.engine.images.update(self.options.images)
        self._rng = random.Random(self.options.seed)

    # ------------------------------------------------------------------ plumbing

    def _reach(self) -> None:
        if not self.options.reachable:
            raise RuntimeError_(
                f"fake engine {self.engine.name} is unreachable (runtime.reachable=false)", temporary=True
            )

    def _find(self, task: objects_pb2.Task, name: str = "") -> FakeContainer | None:
        """The task's container by its name (``name`` if the caller has it), else its labels."""
        found = self.engine.by_name(name or _task.container_name(task))
        return found if found is not None else self.engine.by_labels(task.node_id, task.id)

    def _require(self, task: objects_pb2.Task) -> FakeContainer:
        container = self._find(task)
        if container is None:
            raise RuntimeError_(f"No such container: {_task.container_name(task)}")
        return container

    @staticmethod
    def _ref(container: FakeContainer) -> ContainerRef:
        """What the engine tells of ``container``. Read straight from its task and state (a
        node's list after removals makes one per container it has, once a second while a big
        service goes: the properties' calls were half of it)."""
        task, running = container.task, container.state == RUNNING
        return ContainerRef(
            task.id,
            container.id,
            task.service_id,
            task.node_id,
            running,
            container.exit_code,
            container.pid if running else 0,
        )

    # ------------------------------------------------------------------ role API

    async def describe(self) -> EngineInfo:
        self._reach()
        return EngineInfo(
            hostname=self.options.host_name(),
            os="linux",
            arch=_task.normalise_arch(self.options.machine()),
            nano_cpus=self.options.cpus * 1_000_000_000,
            memory_bytes=self.options.memory_bytes,
            engine_version=f"fake-{VERSION}",
            labels=dict(self.options.labels),
        )

    async def prepare(
        self,
        task: objects_pb2.Task,
        files: Sequence[TaskFile] = (),
        *,
        registry_auth: RegistryAuth | None = None,
    ) -> None:
        """Create the container record (after ``prepare_delay``), pulling the image by name."""
        self._reach()
        _task.check(task)
        name = _task.container_name(task)
        if self._find(task, name) is not None:
            return
        self._pull(task)
        _check_bind_sources(task)
        if self.options.prepare_delay:
            await asyncio.sleep(self.options.prepare_delay)
            if self._find(task, name) is not None:
                return
        self.engine.add(FakeContainer(id=self.engine.new_id(), name=name, task=task))

    def _pull(self, task: objects_pb2.Task) -> None:
        image = task.spec.container.image
        policy = task.spec.container.pull_policy
        present = image in self.engine.images
        if policy == pb.ContainerSpec.PULL_NEVER and not present:
            raise RuntimeError_(f"No such image: {image} (pull policy never)")
        if policy == pb.ContainerSpec.PULL_ALWAYS or not present:
            if any(fnmatch.fnmatch(image, pattern) for pattern in self.options.unpullable):
                raise RuntimeError_(f"pull access denied for {image}: connection refused (fake engine)")
            self.engine.images.add(image)

    async def start(self, task: objects_pb2.Task) -> ContainerRef:
        self._reach()
        container = self._require(task)
        if container.state == CREATED:
            if self.options.start_delay:
                await asyncio.sleep(self.options.start_delay)
            if container.state == CREATED:
                if self.options.failure_rate and self._rng.random() < self.options.failure_rate:
                    raise RuntimeError_("fake engine: injected start failure (runtime.failure_rate)")
                self._run(container)
        health = _task.effective_health(_task.requested_health(container.task))
        if health is not None and container.state == RUNNING:
            await self._until_healthy(container, health)
        return self._ref(container)

    def _run(self, container: FakeContainer) -> None:
        container.state, container.pid = RUNNING, self.engine.next_pid()
        loop = asyncio.get_running_loop()
        container.started_at = loop.time()
        spec = container.task.spec.container
        program = statements(program_of(list(spec.command), list(spec.args)))
        if not runs_on(program):  # one that only waits to be stopped needs no task: it is its state

            async def process() -> None:
                code = await container.shell.run(program)
                container.finish(code)

            container.jobs.append(loop.create_task(process(), name=f"fake-{container.name}"))
        if self.options.exit_after:

            async def exit_later() -> None:
                await asyncio.sleep(self.options.exit_after)
                container.finish(self.options.exit_code)

            container.jobs.append(loop.create_task(exit_later()))

    async def _check(self, container: FakeContainer, health: _task.Health) -> bool:
        test = list(container.task.spec.container.healthcheck.test)
        program = parse(test[1]) if test[0] == "CMD-SHELL" else [test[1:]]
        try:
            async with asyncio.timeout(health.timeout):
                return await container.shell.run(program, check=True) == 0
        except TimeoutError:
            return False

    async def _until_healthy(self, container: FakeContainer, health: _task.Health) -> None:
        """Docker's rule: healthy after one passing check, unhealthy after ``retries`` failed
        ones in a row; then the container is stopped and ``start`` fails."""
        failures = 0
        while True:
            await asyncio.sleep(health.interval)
            if not container.running:
                raise RuntimeError_(_task.exited_before_healthy(container.exit_code or 0, container.error))
            if await self._check(container, health):
                container.jobs.append(
                    asyncio.get_running_loop().create_task(self._monitor(container, health))
                )
                return
            failures += 1
            if failures >= health.retries:
                await self.shutdown(container.task, 0.0)
                raise RuntimeError_(_task.UNHEALTHY)

    async def _monitor(self, container: FakeContainer, health: _task.Health) -> None:
        failures = 0
        while container.running:
            await asyncio.sleep(health.interval)
            failures = 0 if await self._check(container, health) else failures + 1
            if failures >= health.retries:
                container.finish(137, _task.UNHEALTHY)

    async def wait(self, task: objects_pb2.Task) -> ExitStatus:
        self._reach()
        container = self._require(task)
        await container.exited()
        return ExitStatus(exit_code=container.exit_code or 0, error=container.error)

    async def shutdown(self, task: objects_pb2.Task, grace_seconds: float) -> None:
        """The stop signal: a trap for it runs its body (its ``exit N`` is the exit code); a
        trap of ``''`` ignores it until the kill after ``grace_seconds``; without a trap the
        process ends at once with 128+signal (a real PID 1 without a handler would ignore it
        and be killed after the grace period: the fake does not make tests wait for that)."""
        self._reach()
        container = self._find(task)
        if container is None or not container.running:
            return
        signal = signal_name(task.spec.container.stop_signal or "TERM")
        body = container.trap(signal)
        if body is None:
            container.finish(128 + SIGNALS.get(signal, 15))
        elif body == "":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(grace_seconds, 0.0)):
                    await container.exited()
            container.finish(137)
        else:
            for job in container.jobs:
                job.cancel()
            container.finish(await container.shell.run(parse(body), check=True))

    async def remove(self, task: objects_pb2.Task) -> None:
        self._reach()
        container = self._find(task)
        if container is not None:
            self.engine.delete(container)

    async def list_containers(self, node_id: str) -> list[ContainerRef]:
        self._reach()
        return [self._ref(container) for container in self.engine.of_node(node_id)]

    async def find(self, task: objects_pb2.Task) -> ContainerRef | None:
        """One task's container by its labels (``TaskLookup``)."""
        self._reach()
        container = self.engine.by_labels(task.node_id, task.id)
        return self._ref(container) if container is not None else None

    async def logs(self, task: objects_pb2.Task, *, follow: bool, tail: int | None) -> AsyncIterator[LogLine]:
        self._reach()
        container = self._require(task)
        index = 0 if tail is None else max(0, len(container.logs) - tail)
        while True:
            while index < len(container.logs):
                yield container.logs[index]
                index += 1
            if not follow or not container.running:
                return
            await container.changed()

    async def close(self) -> None:
        """Nothing to release: containers live on in the engine, as with a real one."""
