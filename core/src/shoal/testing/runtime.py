"""Conformance suite for runtime providers.

Use it from your plugin's tests::

    import pytest
    from shoal.testing.runtime import EngineContainer, RuntimeConformance

    class TestMyRuntime(RuntimeConformance):
        has_find = True  # MyRuntime has the optional find(task); False if it has not

        @pytest.fixture
        async def runtime(self):
            provider = MyRuntime("unix:///var/run/docker.sock")
            yield provider
            await provider.close()

        @pytest.fixture
        def image(self):
            return "shoal-busybox:1"  # a local image with busybox sh and sleep

        @pytest.fixture
        def engine_containers(self):
            async def containers(node_id):
                ...  # ask the engine itself (not your runtime) for containers labelled node_id
                return [EngineContainer(id=..., name=..., labels=..., running=...)]
            return containers

        @pytest.fixture
        async def unreachable_runtime(self):
            provider = MyRuntime("unix:///nonexistent/engine.sock")
            yield provider
            await provider.close()

        @pytest.fixture
        def remove_volume(self):
            async def remove(name):
                ...  # ask the engine itself to delete the named volume (missing is fine)
            return remove

Every test then runs against your provider on a real engine. They check the contract of
``shoal.roles.RuntimeProvider``: container naming and labels, the pull policies, exit codes,
the stop signal and grace period, removal, listing by node ID (several nodes share one
engine), logs (with and without ``follow``), cancellation of ``wait`` and ``logs``, idempotent
``prepare``/``start``, resource limits, mounts (bind, named volume, tmpfs, read-only), host-mode published ports,
healthchecks (``start`` waits for healthy, fails on unhealthy; ``wait`` reports a container
that turns unhealthy), ``describe`` and the errors it raises. ``find`` is optional:
``has_find`` says whether your runtime has it, so that its check is collected only then (it is
never skipped), and ``test_find_is_as_declared`` fails unless the runtime agrees.

The suite never reaches an image registry: a "missing" image is named on a loopback port
where nothing listens. Each test uses fresh node IDs and removes every container it made.
Named volumes get fresh names and are deleted through ``remove_volume``; bind mounts use
pytest's ``tmp_path``, so the engine must share this machine's filesystem (a local engine).
A missing engine makes the tests fail, never skip.

``make_task`` and ``TaskFactory`` are public too; use them in your own tests.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from shoal.agent.enginegate import TaskLookup
from shoal.ids import new_id
from shoal.proto import objects_pb2 as pb
from shoal.roles.runtime import (
    LABEL_NODE_ID,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_SLOT,
    LABEL_TASK_ID,
    LogLine,
    RuntimeError_,
    RuntimeProvider,
    TaskFile,
)
from shoal.testing.applicability import collect_only_if, declared

#: Upper bound for anything the suite waits on (an engine on a loaded CI machine is slow).
DEADLINE = 30.0
#: An image reference no engine can have or pull: nothing listens on port 1 of loopback.
UNPULLABLE_IMAGE = "127.0.0.1:1/shoal-conformance-missing:latest"


@dataclass
class EngineContainer:
    """A container as the engine itself reports it (the suite's independent witness)."""

    id: str
    name: str
    labels: dict[str, str]
    running: bool


#: ``engine_containers`` fixture type: containers on the engine labelled with a node ID.
EngineContainers = Callable[[str], Awaitable[list[EngineContainer]]]
#: ``remove_volume`` fixture type: delete a named volume on the engine (missing is fine).
VolumeRemover = Callable[[str], Awaitable[None]]


def make_task(
    image: str,
    *,
    node_id: str,
    command: Iterable[str] = (),
    args: Iterable[str] = (),
    env: Iterable[str] = (),
    labels: dict[str, str] | None = None,
    service_name: str = "",
    service_id: str = "",
    slot: int = 1,
    hostname: str = "",
    workdir: str = "",
    user: str = "",
    stop_signal: str = "",
    pull_policy: int = pb.ContainerSpec.PULL_MISSING,
    nano_cpus: int = 0,
    memory_bytes: int = 0,
    mounts: Iterable[pb.Mount] = (),
    healthcheck: pb.HealthConfig | None = None,
    stop_grace_period: float = -1,
) -> pb.Task:
    """A task as the agent receives it: assigned to ``node_id``, desired RUNNING."""
    task = pb.Task(id=new_id(), service_id=service_id or new_id(), slot=slot, node_id=node_id)
    task.service_annotations.name = service_name or f"conformance-{secrets.token_hex(3)}"
    task.desired_state = pb.RUNNING
    container = task.spec.container
    container.image = image
    container.command.extend(command)
    container.args.extend(args)
    container.env.extend(env)
    container.labels.update(labels or {})
    container.hostname = hostname
    container.dir = workdir
    container.user = user
    container.stop_signal = stop_signal
    container.stop_grace_period = stop_grace_period
    container.mounts.extend(mounts)
    if healthcheck is not None:
        container.healthcheck.CopyFrom(healthcheck)
    container.pull_policy = pull_policy  # type: ignore[assignment]
    if nano_cpus or memory_bytes:
        task.spec.resources.limits.nano_cpus = nano_cpus
        task.spec.resources.limits.memory_bytes = memory_bytes
    return task


class TaskFactory:
    """Makes tasks for one fresh node ID and remembers them so the suite can clean up."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.node_id = new_id()
        self.made: list[pb.Task] = []
        self._others: list[TaskFactory] = []

    def __call__(self, *, image: str = "", **options: Any) -> pb.Task:
        task = make_task(image or self.image, node_id=self.node_id, **options)
        self.made.append(task)
        return task

    def shell(self, script: str, **options: Any) -> pb.Task:
        """A task running ``sh -c script``."""
        return self(command=["sh", "-c", script], **options)

    def other_node(self) -> TaskFactory:
        """A factory for a second node on the same engine (cleaned up with this one)."""
        other = TaskFactory(self.image)
        self._others.append(other)
        return other

    def everything(self) -> list[TaskFactory]:
        return [self, *self._others]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _http_status_line(port: int) -> str:
    """The first line of an HTTP answer on 127.0.0.1:port, "" when none comes (an engine's
    proxy may accept and close before the container listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return conn.recv(64).decode(errors="replace").split("\r\n")[0]
    except OSError:
        return ""


def bind(source: str, target: str, *, readonly: bool = False) -> pb.Mount:
    return pb.Mount(type=pb.Mount.BIND, source=source, target=target, readonly=readonly)


def volume(name: str, target: str, *, readonly: bool = False) -> pb.Mount:
    return pb.Mount(type=pb.Mount.VOLUME, source=name, target=target, readonly=readonly)


def tmpfs(target: str, *, size_bytes: int = 0, readonly: bool = False) -> pb.Mount:
    return pb.Mount(type=pb.Mount.TMPFS, target=target, tmpfs_size_bytes=size_bytes, readonly=readonly)


def shell_health(
    command: str, *, interval: float = 0.25, retries: int = 3, timeout: float = 5.0
) -> pb.HealthConfig:
    """A ``CMD-SHELL`` healthcheck with the suite's short timings."""
    return pb.HealthConfig(test=["CMD-SHELL", command], interval=interval, timeout=timeout, retries=retries)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, deadline: float = DEADLINE) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``deadline`` seconds."""
    give_up = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > give_up:
            pytest.fail(f"timed out after {deadline:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def collect(lines: AsyncIterator[LogLine], deadline: float = DEADLINE) -> list[LogLine]:
    """Every line of a (finite) log stream, failing if it does not end in time."""

    async def drain() -> list[LogLine]:
        return [line async for line in lines]

    try:
        return await asyncio.wait_for(drain(), deadline)
    except TimeoutError:
        pytest.fail(f"log stream did not end within {deadline:.0f}s")


class RuntimeConformance:
    """Subclass in your plugin's tests and override the four fixtures below.

    Works with pytest-asyncio in ``auto`` or ``strict`` mode (in strict mode, write your own
    async fixtures with ``@pytest_asyncio.fixture``).
    """

    pytestmark = [pytest.mark.asyncio]

    #: Whether your runtime has the optional ``find(task)`` (``shoal.agent.enginegate``'s
    #: ``TaskLookup``); written out here because pytest decides what to collect before any
    #: runtime is built.
    has_find: ClassVar[bool]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        has_find = declared(cls, "has_find", bool, "has_find = True")
        collect_only_if(cls, RuntimeConformance, "test_find_looks_a_container_up_by_its_labels", has_find)

    # ------------------------------------------------------------------ fixtures to override

    @pytest.fixture
    def runtime(self) -> RuntimeProvider:
        """Your provider, connected to a real engine (an async generator fixture is fine)."""
        pytest.fail("override the `runtime` fixture with your RuntimeProvider")

    @pytest.fixture
    def image(self) -> str:
        """A local image reference whose filesystem has busybox ``sh`` and ``sleep``."""
        pytest.fail("override the `image` fixture with a local busybox image")

    @pytest.fixture
    def engine_containers(self) -> EngineContainers:
        """An async callable listing the engine's containers labelled with a node ID,
        asked of the engine directly (not through the runtime under test)."""
        pytest.fail("override the `engine_containers` fixture")

    @pytest.fixture
    def unreachable_runtime(self) -> RuntimeProvider:
        """Your provider pointed at an endpoint where no engine listens."""
        pytest.fail("override the `unreachable_runtime` fixture")

    @pytest.fixture
    def remove_volume(self) -> VolumeRemover:
        """An async callable deleting a named volume on the engine (missing is fine)."""
        pytest.fail("override the `remove_volume` fixture")

    # ------------------------------------------------------------------ suite plumbing

    @pytest_asyncio.fixture
    async def tasks(
        self, runtime: RuntimeProvider, image: str, engine_containers: EngineContainers
    ) -> AsyncIterator[TaskFactory]:
        factory = TaskFactory(image)
        yield factory
        leftovers: list[str] = []
        for each in factory.everything():
            for task in each.made:
                try:
                    await runtime.remove(task)
                except RuntimeError_:
                    pass
            leftovers += [c.name for c in await engine_containers(each.node_id)]
        assert not leftovers, f"containers left behind after remove: {leftovers}"

    async def _one(self, engine_containers: EngineContainers, node_id: str) -> EngineContainer:
        found = await engine_containers(node_id)
        assert len(found) == 1, f"expected one container for node {node_id}, engine has {found}"
        return found[0]

    async def _wait(self, runtime: RuntimeProvider, task: pb.Task) -> int:
        try:
            status = await asyncio.wait_for(runtime.wait(task), DEADLINE)
        except TimeoutError:
            pytest.fail(f"wait did not return within {DEADLINE:.0f}s")
        return status.exit_code

    async def _logged(self, runtime: RuntimeProvider, task: pb.Task, text: str) -> None:
        async def seen() -> bool:
            lines = await collect(runtime.logs(task, follow=False, tail=None))
            return any(line.text == text for line in lines)

        await eventually(seen, f"{text!r} in the task's logs")

    # ------------------------------------------------------------------ describe

    async def test_describe_reports_the_engine(self, runtime: RuntimeProvider) -> None:
        info = await runtime.describe()
        assert info.hostname and info.os and info.arch and info.engine_version
        assert info.nano_cpus >= 1_000_000_000 and info.nano_cpus % 1_000_000_000 == 0
        assert info.memory_bytes > 0
        assert info.arch not in ("amd64", "arm64"), f"arch {info.arch!r} not normalised like Swarm's"
        assert isinstance(info.labels, dict)

    async def test_unreachable_engine_is_a_temporary_error_naming_it(
        self, unreachable_runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        with pytest.raises(RuntimeError_) as caught:
            await unreachable_runtime.describe()
        assert caught.value.temporary
        assert str(caught.value)
        with pytest.raises(RuntimeError_) as caught:
            await unreachable_runtime.prepare(tasks.shell("true"))
        assert caught.value.temporary

    # ------------------------------------------------------------------ prepare

    async def test_prepare_creates_a_labelled_container_without_starting_it(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        task = tasks.shell("sleep 3600", labels={"com.example.team": "search"}, slot=3)
        await runtime.prepare(task)
        found = await self._one(engine_containers, tasks.node_id)
        assert not found.running
        assert found.name.lstrip("/") == f"{task.service_annotations.name}.3.{task.id}"
        expected = {
            LABEL_NODE_ID: tasks.node_id,
            LABEL_TASK_ID: task.id,
            LABEL_SERVICE_ID: task.service_id,
            LABEL_SERVICE_NAME: task.service_annotations.name,
            LABEL_SLOT: "3",
            "com.example.team": "search",
        }
        assert {key: found.labels.get(key) for key in expected} == expected

    async def test_global_task_is_named_after_its_node(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        task = tasks.shell("true", slot=0)
        await runtime.prepare(task)
        found = await self._one(engine_containers, tasks.node_id)
        assert found.name.lstrip("/") == f"{task.service_annotations.name}.{tasks.node_id}.{task.id}"

    async def test_prepare_is_idempotent(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        task = tasks.shell("sleep 3600")
        await runtime.prepare(task)
        await runtime.prepare(task)
        first = await self._one(engine_containers, tasks.node_id)
        ref = await runtime.start(task)
        assert ref.container_id == first.id
        await runtime.prepare(task)  # also once running
        assert (await self._one(engine_containers, tasks.node_id)).running

    async def test_missing_image_is_a_permanent_error_with_the_engines_message(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        task = tasks.shell("true", image=UNPULLABLE_IMAGE)
        with pytest.raises(RuntimeError_) as caught:
            await asyncio.wait_for(runtime.prepare(task), DEADLINE)
        assert not caught.value.temporary
        assert str(caught.value).strip()
        assert await engine_containers(tasks.node_id) == []

    async def test_pull_never_refuses_an_absent_image_and_uses_a_present_one(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        absent = f"shoal-conformance-absent-{secrets.token_hex(4)}"
        task = tasks.shell("true", image=f"{absent}:latest", pull_policy=pb.ContainerSpec.PULL_NEVER)
        with pytest.raises(RuntimeError_) as caught:
            await asyncio.wait_for(runtime.prepare(task), DEADLINE)
        assert not caught.value.temporary
        assert absent in str(caught.value), f"error does not name the image: {caught.value}"
        assert await engine_containers(tasks.node_id) == []

        present = tasks.shell("true", pull_policy=pb.ContainerSpec.PULL_NEVER)
        await runtime.prepare(present)
        assert len(await engine_containers(tasks.node_id)) == 1

    # ------------------------------------------------------------------ start, wait

    async def test_start_runs_the_container(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        task = tasks(args=["sleep", "3600"])
        await runtime.prepare(task)
        ref = await runtime.start(task)
        found = await self._one(engine_containers, tasks.node_id)
        assert found.running
        assert ref.container_id == found.id
        assert (ref.task_id, ref.service_id, ref.node_id) == (task.id, task.service_id, tasks.node_id)
        assert ref.running and ref.pid > 0
        again = await runtime.start(task)  # idempotent for a running container
        assert again.container_id == ref.container_id and again.running

    async def test_wait_returns_the_exit_code(self, runtime: RuntimeProvider, tasks: TaskFactory) -> None:
        failing = tasks.shell("exit 3")
        clean = tasks.shell("exit 0")
        for task in (failing, clean):
            await runtime.prepare(task)
            await runtime.start(task)
        status = await asyncio.wait_for(runtime.wait(failing), DEADLINE)
        assert status.exit_code == 3
        status = await asyncio.wait_for(runtime.wait(clean), DEADLINE)
        assert (status.exit_code, status.error) == (0, "")

    async def test_wait_can_be_cancelled(self, runtime: RuntimeProvider, tasks: TaskFactory) -> None:
        task = tasks.shell("sleep 3600")
        await runtime.prepare(task)
        await runtime.start(task)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(runtime.wait(task), 0.5)
        assert time.monotonic() - began < 5, "cancelling wait blocked the caller"
        ref = await runtime.start(task)  # the runtime still answers
        assert ref.running

    async def test_spec_fields_reach_the_container(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        task = tasks(
            command=["sh", "-c"],
            args=[
                'echo "greeting=$GREETING"; echo "dir=$(pwd)"; echo "host=$(hostname)"; echo "uid=$(id -u)"'
            ],
            env=["GREETING=hello"],
            workdir="/tmp",
            hostname="conformance-host",
            user="65534",
        )
        await runtime.prepare(task)
        await runtime.start(task)
        assert await self._wait(runtime, task) == 0
        lines = await collect(runtime.logs(task, follow=False, tail=None))
        assert [line.text for line in lines] == [
            "greeting=hello",
            "dir=/tmp",
            "host=conformance-host",
            "uid=65534",
        ]

    async def test_args_alone_replace_the_image_command(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        task = tasks(args=["sh", "-c", "echo from-args; exit 4"])
        await runtime.prepare(task)
        await runtime.start(task)
        assert await self._wait(runtime, task) == 4
        lines = await collect(runtime.logs(task, follow=False, tail=None))
        assert [line.text for line in lines] == ["from-args"]

    async def test_resource_limits_are_applied(self, runtime: RuntimeProvider, tasks: TaskFactory) -> None:
        script = (
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes;"
            " cat /sys/fs/cgroup/cpu.max 2>/dev/null ||"
            ' echo "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"'
        )
        task = tasks.shell(script, nano_cpus=500_000_000, memory_bytes=64 * 1024 * 1024)
        await runtime.prepare(task)
        await runtime.start(task)
        assert await self._wait(runtime, task) == 0
        lines = [line.text for line in await collect(runtime.logs(task, follow=False, tail=None))]
        assert lines[0] == str(64 * 1024 * 1024)
        quota, period = (int(part) for part in lines[1].split())
        assert quota * 2 == period, f"CPU quota {quota}/{period} is not half a CPU"

    # ------------------------------------------------------------------ shutdown, remove

    async def test_shutdown_kills_after_the_grace_period(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        # sleep as PID 1 ignores SIGTERM: only the kill after the grace period ends it.
        task = tasks(args=["sleep", "3600"])
        await runtime.prepare(task)
        await runtime.start(task)
        began = time.monotonic()
        await asyncio.wait_for(runtime.shutdown(task, 1.0), 15)
        assert time.monotonic() - began < 15
        assert not (await self._one(engine_containers, tasks.node_id)).running
        assert await self._wait(runtime, task) != 0

    async def test_shutdown_sends_the_stop_signal(self, runtime: RuntimeProvider, tasks: TaskFactory) -> None:
        task = tasks.shell(
            "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.1; done",
            stop_signal="SIGUSR1",
        )
        await runtime.prepare(task)
        await runtime.start(task)
        await self._logged(runtime, task, "ready")
        began = time.monotonic()
        await asyncio.wait_for(runtime.shutdown(task, 60.0), DEADLINE)
        assert time.monotonic() - began < 20, "the stop signal did not end the container"
        assert await self._wait(runtime, task) == 7

    async def test_shutdown_of_absent_or_stopped_container_does_nothing(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        await runtime.shutdown(tasks.shell("true"), 1.0)  # never prepared
        task = tasks.shell("exit 0")
        await runtime.prepare(task)
        await runtime.start(task)
        await self._wait(runtime, task)
        await runtime.shutdown(task, 1.0)

    async def test_remove_deletes_the_container_and_tolerates_absence(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        task = tasks(args=["sleep", "3600"])
        await runtime.prepare(task)
        await runtime.start(task)
        await runtime.remove(task)  # running: removal is forced
        assert await engine_containers(tasks.node_id) == []
        await runtime.remove(task)
        await runtime.remove(tasks.shell("true"))  # never prepared

    async def test_remove_finds_a_container_by_its_labels(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        """The agent removes a stray container knowing only its labels (node, task, service
        IDs), not the service name and slot its name is made of."""
        task = tasks(args=["sleep", "3600"])
        await runtime.prepare(task)
        await runtime.start(task)
        await runtime.remove(pb.Task(id=task.id, node_id=task.node_id, service_id=task.service_id))
        assert await engine_containers(tasks.node_id) == []

    async def test_find_is_as_declared(self, runtime: RuntimeProvider) -> None:
        """``has_find`` chose whether the ``find`` check is collected: it must be the truth."""
        really = isinstance(runtime, TaskLookup)
        assert really == self.has_find, (
            f"{type(self).__name__}.has_find is {self.has_find} but the runtime "
            f"{'has' if really else 'has no'} find(task): set has_find = {really}"
        )

    async def test_find_looks_a_container_up_by_its_labels(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        """``find`` is optional (the agent falls back to ``list_containers``); a runtime that
        has it (``has_find``) must find the task's container in every state, and only that one."""
        assert isinstance(runtime, TaskLookup), "has_find is True but the runtime has no find(task)"
        task, other = tasks(args=["sleep", "3600"]), tasks(args=["sleep", "3600"])
        assert await runtime.find(task) is None
        await runtime.prepare(task)
        await runtime.prepare(other)
        created = await runtime.find(task)
        assert created is not None and created.task_id == task.id and not created.running
        assert created.exit_code is None
        started = await runtime.start(task)
        found = await runtime.find(task)
        assert found is not None and found.running and found.container_id == started.container_id
        await runtime.remove(task)
        assert await runtime.find(task) is None

    # ------------------------------------------------------------------ list_containers

    async def test_list_containers_only_shows_this_nodes_containers(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        other = tasks.other_node()
        mine = tasks(args=["sleep", "3600"])
        exited = tasks.shell("exit 3")
        theirs = other.shell("sleep 3600")
        for task in (mine, exited, theirs):
            await runtime.prepare(task)
        await runtime.start(mine)
        await runtime.start(exited)
        await self._wait(runtime, exited)

        listed = {ref.task_id: ref for ref in await runtime.list_containers(tasks.node_id)}
        assert set(listed) == {mine.id, exited.id}
        assert listed[mine.id].running and listed[mine.id].service_id == mine.service_id
        assert listed[mine.id].node_id == tasks.node_id and listed[mine.id].container_id
        assert not listed[exited.id].running and listed[exited.id].exit_code == 3

        theirs_listed = await runtime.list_containers(other.node_id)
        assert [(ref.task_id, ref.running, ref.exit_code) for ref in theirs_listed] == [
            (theirs.id, False, None)
        ]
        assert await runtime.list_containers(new_id()) == []

    # ------------------------------------------------------------------ logs

    async def test_logs_return_what_the_container_printed(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        task = tasks.shell("echo out1; echo err1 >&2; echo out2")
        await runtime.prepare(task)
        await runtime.start(task)
        assert await self._wait(runtime, task) == 0
        lines = await collect(runtime.logs(task, follow=False, tail=None))
        assert all(line.task_id == task.id for line in lines)
        # Only the order within a stream is checked: engines read stdout and stderr from
        # separate pipes, so their interleaving is not reliable.
        assert [line.text for line in lines if line.stream == "stdout"] == ["out1", "out2"]
        assert [line.text for line in lines if line.stream == "stderr"] == ["err1"]

    async def test_logs_tail_returns_the_last_lines(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        task = tasks.shell("echo one; echo two; echo three")
        await runtime.prepare(task)
        await runtime.start(task)
        assert await self._wait(runtime, task) == 0
        last = await collect(runtime.logs(task, follow=False, tail=2))
        assert [line.text for line in last] == ["two", "three"]
        assert await collect(runtime.logs(task, follow=False, tail=0)) == []

    async def test_logs_follow_streams_until_the_container_exits(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        task = tasks.shell("echo first; sleep 1; echo second")
        await runtime.prepare(task)
        await runtime.start(task)
        lines = await collect(runtime.logs(task, follow=True, tail=None))
        assert [line.text for line in lines] == ["first", "second"]

    async def test_logs_follow_can_be_abandoned(self, runtime: RuntimeProvider, tasks: TaskFactory) -> None:
        task = tasks.shell("echo ready; exec sleep 3600")
        await runtime.prepare(task)
        await runtime.start(task)
        stream = runtime.logs(task, follow=True, tail=None)
        first = await asyncio.wait_for(anext(stream), DEADLINE)
        assert first.text == "ready"
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(stream), 0.5)  # cancels the pending read
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await asyncio.wait_for(closer(), 5)
        assert time.monotonic() - began < 6, "abandoning a followed log stream blocked the caller"

    # ------------------------------------------------------------------ mounts

    async def test_task_files_are_on_a_read_only_tmpfs_with_their_owner_and_mode(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        # Runtime API 2: ``prepare``'s files (secrets at /run/secrets/<name>, configs at their
        # path) are in the container before it starts, from memory, read-only, owned and
        # moded as given.
        value = secrets.token_hex(16)
        task = tasks.shell(
            "echo \"$(cat /run/secrets/db)\"; stat -c '%a %u:%g' /run/secrets/db;"
            " grep ' /run/secrets ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1;"
            " echo \"$(cat /etc/app.conf)\"; stat -c '%a' /etc/app.conf;"
            " if { echo x > /run/secrets/db; } 2>/dev/null; then echo wrote; else echo refused; fi"
        )
        files = [
            TaskFile("/run/secrets/db", value.encode(), uid=7, gid=8, mode=0o400),
            TaskFile("/etc/app.conf", b"conf-data", secret=False),
        ]
        await runtime.prepare(task, files)
        await runtime.start(task)
        assert await self._wait(runtime, task) == 0
        lines = [line.text for line in await collect(runtime.logs(task, follow=False, tail=None))]
        assert lines == [value, "400 7:8", "tmpfs ro", "conf-data", "444", "refused"], lines
        await runtime.remove(task)

    async def test_bind_mounts_share_host_files_and_readonly_refuses_writes(
        self, runtime: RuntimeProvider, tasks: TaskFactory, tmp_path: Path
    ) -> None:
        given, taken = tmp_path / "given", tmp_path / "taken"
        given.mkdir()
        taken.mkdir()
        secret = secrets.token_hex(8)
        (given / "greeting").write_text(f"{secret}\n")
        task = tasks.shell(
            "cat /given/greeting;"
            " if { echo x > /given/new; } 2>/dev/null; then echo wrote-readonly; else echo readonly-refused; fi;"
            " echo from-container > /taken/reply",
            mounts=[bind(str(given), "/given", readonly=True), bind(str(taken), "/taken")],
        )
        await runtime.prepare(task)
        await runtime.start(task)
        assert await self._wait(runtime, task) == 0
        lines = [line.text for line in await collect(runtime.logs(task, follow=False, tail=None))]
        assert lines == [secret, "readonly-refused"], lines
        assert not (given / "new").exists()
        assert (taken / "reply").read_text() == "from-container\n"

    async def test_host_mode_published_port_reaches_the_container(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        """``task.endpoint`` ports with ``publish_mode`` HOST are bound on the node (Swarm's
        ``--publish mode=host``): a connection to the published port reaches the container."""
        published = _free_port()
        task = tasks.shell("echo ready; exec httpd -f -p 8080 -h /tmp")
        task.endpoint.ports.add(target_port=8080, published_port=published, publish_mode=pb.PortConfig.HOST)
        await runtime.prepare(task)
        await runtime.start(task)

        async def answers() -> bool:
            return (await asyncio.to_thread(_http_status_line, published)).startswith("HTTP/1.")

        await eventually(answers, f"an HTTP answer on 127.0.0.1:{published}")
        await runtime.shutdown(task, 1.0)

    async def test_bind_mount_of_a_missing_host_path_is_a_permanent_error(
        self,
        runtime: RuntimeProvider,
        tasks: TaskFactory,
        engine_containers: EngineContainers,
        tmp_path: Path,
    ) -> None:
        missing = tmp_path / "not-there"
        task = tasks.shell("true", mounts=[bind(str(missing), "/data")])
        with pytest.raises(RuntimeError_) as caught:
            await asyncio.wait_for(runtime.prepare(task), DEADLINE)
        assert not caught.value.temporary
        assert str(missing) in str(caught.value), f"error does not name the path: {caught.value}"
        assert await engine_containers(tasks.node_id) == []

    async def test_named_volume_outlives_its_task(
        self, runtime: RuntimeProvider, tasks: TaskFactory, remove_volume: VolumeRemover
    ) -> None:
        name = f"shoal-conformance-{secrets.token_hex(6)}"
        try:
            writer = tasks.shell(f"echo {name} > /keep/mark", mounts=[volume(name, "/keep")])
            await runtime.prepare(writer)  # the engine creates the volume
            await runtime.start(writer)
            assert await self._wait(runtime, writer) == 0
            await runtime.remove(writer)

            reader = tasks.shell(
                "cat /keep/mark; if { echo x > /keep/other; } 2>/dev/null; then echo wrote-readonly; fi",
                mounts=[volume(name, "/keep", readonly=True)],
            )
            await runtime.prepare(reader)
            await runtime.start(reader)
            assert await self._wait(runtime, reader) == 0
            lines = [line.text for line in await collect(runtime.logs(reader, follow=False, tail=None))]
            assert lines == [name], lines
        finally:
            for task in tasks.made:
                await runtime.remove(task)
            await remove_volume(name)

    async def test_anonymous_volume_and_tmpfs_are_mounted(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        task = tasks.shell(
            "grep -E ' /(scratch|frozen) ' /proc/mounts | sort -k2;"
            " echo data > /anon/f && cat /anon/f;"
            " if { echo x > /frozen/f; } 2>/dev/null; then echo wrote-readonly; fi",
            mounts=[
                tmpfs("/scratch", size_bytes=1024 * 1024),
                tmpfs("/frozen", readonly=True),
                volume("", "/anon"),
            ],
        )
        await runtime.prepare(task)
        await runtime.start(task)
        assert await self._wait(runtime, task) == 0
        lines = [line.text for line in await collect(runtime.logs(task, follow=False, tail=None))]
        assert len(lines) == 3, f"unexpected output: {lines}"
        frozen, scratch = (line.split() for line in lines[:2])
        assert (frozen[1], frozen[2]) == ("/frozen", "tmpfs") and "ro" in frozen[3].split(",")
        assert (scratch[1], scratch[2]) == ("/scratch", "tmpfs") and "rw" in scratch[3].split(",")
        assert "size=1024k" in scratch[3].split(","), f"tmpfs size not applied: {scratch[3]}"
        assert lines[2] == "data"

    # ------------------------------------------------------------------ healthchecks

    async def test_start_returns_only_once_the_container_is_healthy(
        self, runtime: RuntimeProvider, tasks: TaskFactory, tmp_path: Path
    ) -> None:
        # The container marks itself ready on a bind mount after 2 s: the file's mtime, set
        # by the kernel, tells when that happened, independently of the runtime.
        task = tasks.shell(
            "sleep 2; touch /shared/ready; exec sleep 3600",
            mounts=[bind(str(tmp_path), "/shared")],
            healthcheck=shell_health("test -f /shared/ready", retries=100),
        )
        await runtime.prepare(task)
        began = time.time()
        ref = await asyncio.wait_for(runtime.start(task), DEADLINE)
        returned = time.time()
        ready = tmp_path / "ready"
        assert ready.exists(), f"start returned after {returned - began:.1f}s, before the container was ready"
        assert ready.stat().st_mtime <= returned
        assert returned - ready.stat().st_mtime < 5, "start returned long after the container was healthy"
        assert ref.running and ref.pid > 0

    async def test_start_fails_when_the_container_is_unhealthy(
        self, runtime: RuntimeProvider, tasks: TaskFactory, engine_containers: EngineContainers
    ) -> None:
        task = tasks.shell(
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
            healthcheck=shell_health("exit 1", retries=2),
            stop_grace_period=1,
        )
        await runtime.prepare(task)
        with pytest.raises(RuntimeError_) as caught:
            await asyncio.wait_for(runtime.start(task), DEADLINE)
        assert "unhealthy" in str(caught.value) and not caught.value.temporary
        assert not (await self._one(engine_containers, tasks.node_id)).running, (
            "unhealthy container left running"
        )

    async def test_start_fails_when_the_container_exits_before_it_is_healthy(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        task = tasks.shell("exit 3", healthcheck=shell_health("true"))
        await runtime.prepare(task)
        with pytest.raises(RuntimeError_) as caught:
            await asyncio.wait_for(runtime.start(task), DEADLINE)
        assert "3" in str(caught.value) and not caught.value.temporary

    async def test_wait_reports_a_container_that_turns_unhealthy(
        self,
        runtime: RuntimeProvider,
        tasks: TaskFactory,
        engine_containers: EngineContainers,
        tmp_path: Path,
    ) -> None:
        (tmp_path / "ok").touch()
        task = tasks.shell(
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
            mounts=[bind(str(tmp_path), "/shared")],
            healthcheck=shell_health("test -f /shared/ok", retries=2),
            stop_grace_period=1,
        )
        await runtime.prepare(task)
        await asyncio.wait_for(runtime.start(task), DEADLINE)
        waiting = asyncio.ensure_future(runtime.wait(task))
        try:
            done, _ = await asyncio.wait({waiting}, timeout=1.0)
            assert not done, f"wait returned while the container was healthy: {waiting.result()}"
            (tmp_path / "ok").unlink()
            status = await asyncio.wait_for(waiting, DEADLINE)
        finally:
            waiting.cancel()
        assert status.error == "unhealthy container"
        assert not (await self._one(engine_containers, tasks.node_id)).running

    async def test_wait_with_a_healthcheck_can_be_cancelled(
        self, runtime: RuntimeProvider, tasks: TaskFactory
    ) -> None:
        task = tasks.shell("exec sleep 3600", healthcheck=shell_health("true"))
        await runtime.prepare(task)
        await asyncio.wait_for(runtime.start(task), DEADLINE)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(runtime.wait(task), 0.5)
        assert time.monotonic() - began < 5, "cancelling wait blocked the caller"
        assert (await runtime.start(task)).running  # the runtime still answers; still healthy
