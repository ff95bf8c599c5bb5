"""``DockerRuntime``: the runtime role on dockerd, through the docker SDK's low-level client.

We use ``docker.APIClient`` rather than the high-level ``DockerClient`` because the latter
re-inspects after every create and start; the end-to-end benchmark (50 replicas to running)
is dominated by engine round trips. Containers are addressed by their Swarm-style name, which
the task alone determines, so no ID cache is needed and a restarted agent finds its
containers again.

Healthchecks are run by dockerd itself; ``start`` and ``wait`` only watch the status it keeps
(``State.Health``), between bounded ``wait`` requests that also notice an exit at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import docker
import docker.errors
import requests
import urllib3
from shoal.plugin import (
    LABEL_NODE_ID,
    LABEL_TASK_ID,
    ContainerRef,
    EngineInfo,
    ExitStatus,
    LogLine,
    PluginContext,
    RegistryAuth,
    RuntimeError_,
    TaskFile,
)
from shoal.plugin import objects_pb2 as pb
from shoal.runtimekit import hostports, taskfiles
from shoal.runtimekit import task as _task
from shoal.runtimekit.bridge import call
from shoal.runtimekit.exits import ExitWatch, Subscription
from shoal.runtimekit.logs import stream_logs

T = TypeVar("T")

DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"
#: The API version we speak: Docker 20.10's; newer engines still accept it. Fixing it saves
#: the version negotiation round trip at connect.
API_VERSION = "1.41"
#: ``wait`` re-issues its request this often so that a cancelled wait frees its thread.
WAIT_POLL_SECONDS = 5.0

#: Bounds on how often ``start`` and ``wait`` look at a container's health: half its interval,
#: so a status change is seen within about half an interval, but not more than 10 times a
#: second, and at least once a second.
HEALTH_POLL_MIN = 0.1
HEALTH_POLL_MAX = 1.0

_PULL_ALWAYS = pb.ContainerSpec.PULL_ALWAYS
_MOUNT_TYPES = {pb.Mount.BIND: "bind", pb.Mount.VOLUME: "volume", pb.Mount.TMPFS: "tmpfs"}
_PULL_MISSING = pb.ContainerSpec.PULL_MISSING
#: A stopped container's status in the engine's list, e.g. ``Exited (3) 2 seconds ago``.
_EXITED = re.compile(r"^Exited \((-?\d+)\)")


def endpoint_from(options: dict[str, str], environ: dict[str, str] | None = None) -> str:
    """``host`` option, else ``DOCKER_HOST``, else the local socket."""
    env = os.environ if environ is None else environ
    return options.get("host") or env.get("DOCKER_HOST") or DEFAULT_ENDPOINT


def mounts(spec: pb.ContainerSpec) -> list[dict[str, Any]]:
    """The spec's mounts in the engine API's ``HostConfig.Mounts`` shape."""
    result = []
    for mount in spec.mounts:
        entry: dict[str, Any] = {
            "Type": _MOUNT_TYPES[mount.type],
            "Target": mount.target,
            "Source": mount.source,
            "ReadOnly": mount.readonly,
        }
        if mount.type == pb.Mount.TMPFS and mount.tmpfs_size_bytes:
            entry["TmpfsOptions"] = {"SizeBytes": mount.tmpfs_size_bytes}
        result.append(entry)
    return result


def host_options(task: pb.Task) -> dict[str, Any]:
    """The spec's container options (``--cap-add``, ``--dns``, ``--ulimit``...) as
    ``create_host_config`` arguments; unset ones are left out (the engine's defaults)."""
    spec = task.spec.container
    options: dict[str, Any] = {
        "dns": _task.nameservers(task),
        "dns_search": list(spec.dns_config.search),
        "dns_opt": list(spec.dns_config.options),
        "cap_add": list(spec.capability_add),
        "cap_drop": list(spec.capability_drop),
        "sysctls": dict(spec.sysctls),
        "ulimits": [{"name": u["Name"], "soft": u["Soft"], "hard": u["Hard"]} for u in _task.ulimits(task)],
        "extra_hosts": _task.extra_hosts(task),
        "group_add": list(spec.groups),
        "pids_limit": _task.pids_limit(task),
        "read_only": spec.read_only,
        "init": spec.init,
    }
    if task.spec.log_driver.name:
        options["log_config"] = {
            "type": task.spec.log_driver.name,
            "config": dict(task.spec.log_driver.options),
        }
    return {key: value for key, value in options.items() if value}


def _bind(bind: taskfiles.Bind) -> dict[str, Any]:
    """A secrets or configs tmpfs path, read-only in the container."""
    return {"Type": "bind", "Source": bind.source, "Target": bind.target, "ReadOnly": True}


def health_poll_seconds(health: _task.Health) -> float:
    return min(max(health.interval / 2, HEALTH_POLL_MIN), HEALTH_POLL_MAX)


def _is_read_timeout(exc: BaseException) -> bool:
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    return any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection error, e.g. "No such file or directory"."""
    seen: BaseException = exc
    for _ in range(6):
        inner = next((arg for arg in seen.args if isinstance(arg, BaseException)), None)
        inner = inner or seen.__cause__
        if inner is None:
            break
        seen = inner
    return getattr(seen, "strerror", None) or str(seen)


def _ref(entry: dict[str, Any]) -> ContainerRef:
    """A container as the engine's list shows it; a stopped one's exit code is in its status."""
    stopped = entry.get("State") not in ("running", "created")
    exited = _EXITED.match(str(entry.get("Status") or ""))
    return _task.listed_container(entry, exit_code=int(exited.group(1)) if stopped and exited else None)


class DockerRuntime:
    """Runs this node's tasks as containers on one dockerd."""

    role: ClassVar[str] = "runtime"
    api_version: ClassVar[int] = 2
    #: Engine operations the agent runs at once on dockerd (``--max-concurrent-engine-calls``
    #: overrides it). dockerd's own CPU is the limit: 20 or 50 containers created and started
    #: all at once took no less time than 8 at a time (docs/benchmarks.md, issue 18 item 4),
    #: and 8 keeps the engine answering its other clients under a backlog of hundreds.
    engine_concurrency: ClassVar[int] = 8

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 60.0,
        files_dir: Path = taskfiles.DEFAULT_DIR,
    ) -> None:
        self.endpoint = endpoint
        #: Where each task's secrets and configs tmpfs is mounted (``shoal.runtimekit.taskfiles``).
        self.files_dir = files_dir
        try:
            self._api: Any = docker.APIClient(
                base_url=endpoint, version=API_VERSION, timeout=timeout, max_pool_size=128
            )
        except docker.errors.DockerException as exc:
            raise RuntimeError_(f"invalid docker endpoint {endpoint!r}: {exc}") from exc
        self._exits = ExitWatch(self._subscribe_deaths, endpoint)

    @classmethod
    def from_context(cls, context: PluginContext) -> DockerRuntime:
        return cls(endpoint_from(context.options), files_dir=context.state_dir / "task-files")

    # ------------------------------------------------------------------ plumbing

    def _translate(self, exc: BaseException) -> BaseException:
        """Map SDK exceptions to ``RuntimeError_``: engine words, temporary when unreachable."""
        if isinstance(exc, RuntimeError_):
            return exc
        if isinstance(exc, docker.errors.APIError):
            explanation = exc.explanation
            if isinstance(explanation, bytes):
                explanation = explanation.decode(errors="replace")
            return RuntimeError_(str(explanation or exc).strip())
        if isinstance(exc, requests.exceptions.ConnectionError):
            if _is_read_timeout(exc):
                return RuntimeError_(
                    f"docker engine at {self.endpoint} did not answer in time", temporary=True
                )
            return RuntimeError_(
                f"docker engine at {self.endpoint} is unreachable: {_reason(exc)}", temporary=True
            )
        if isinstance(exc, requests.exceptions.RequestException):
            return RuntimeError_(f"docker engine at {self.endpoint}: {exc}", temporary=True)
        if isinstance(exc, docker.errors.DockerException):
            return RuntimeError_(str(exc))
        return exc

    async def _run(self, fn: Callable[..., T], /, *args: Any) -> T:
        try:
            return await call(fn, *args)
        except Exception as exc:
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    # ------------------------------------------------------------------ role API

    async def describe(self) -> EngineInfo:
        info = await self._run(self._api.info)
        labels = {
            key: value for key, _, value in (label.partition("=") for label in info.get("Labels") or [])
        }
        return EngineInfo(
            hostname=info.get("Name", ""),
            os=info.get("OSType", ""),
            arch=_task.normalise_arch(info.get("Architecture", "")),
            nano_cpus=int(info.get("NCPU", 0)) * 1_000_000_000,
            memory_bytes=int(info.get("MemTotal", 0)),
            engine_version=info.get("ServerVersion", ""),
            labels=labels,
        )

    async def prepare(
        self, task: pb.Task, files: Sequence[TaskFile] = (), *, registry_auth: RegistryAuth | None = None
    ) -> None:
        _task.check(task)
        taskfiles.check(files)
        await self._run(self._prepare, task, files, registry_auth)

    def _prepare(self, task: pb.Task, files: Sequence[TaskFile], auth: RegistryAuth | None = None) -> None:
        """Create the container, pulling first or on a miss as the pull policy says.

        Creating straight away (rather than inspecting the image first) costs one round trip
        when the image is present, which is the common case.
        """
        binds = taskfiles.materialise(self.files_dir, task.id, files)
        policy = task.spec.container.pull_policy
        if policy == _PULL_ALWAYS:
            self._pull(task.spec.container.image, auth)
        try:
            self._create(task, binds)
            return
        except docker.errors.ImageNotFound:
            if policy != _PULL_MISSING:
                raise
        self._pull(task.spec.container.image, auth)
        self._create(task, binds)

    def _pull(self, image: str, auth: RegistryAuth | None) -> None:
        """Pull ``image``; with ``auth`` (``--with-registry-auth``) as the client sent it, else
        with whatever the docker SDK finds in this daemon's own docker config."""
        config = auth.docker_auth_config() if auth is not None else None
        for event in self._api.pull(image, stream=True, decode=True, auth_config=config):
            error = event.get("error") or (event.get("errorDetail") or {}).get("message")
            if error:
                raise RuntimeError_(str(error))

    def _create(self, task: pb.Task, binds: Sequence[taskfiles.Bind] = ()) -> None:
        spec = task.spec.container
        nano_cpus, memory = _task.limits(task)
        host_config = self._api.create_host_config(
            nano_cpus=nano_cpus or None,
            mem_limit=memory or None,
            mounts=mounts(spec) + [_bind(b) for b in binds] or None,
            **host_options(task),
        )
        bindings = hostports.docker_bindings(task)
        if bindings:  # mode=host published ports: bound by dockerd on this node
            host_config["PortBindings"] = bindings
        try:
            self._api.create_container(
                spec.image,
                name=_task.container_name(task),
                entrypoint=list(spec.command) or None,
                command=list(spec.args) or None,
                environment=list(spec.env) or None,
                hostname=spec.hostname or None,
                working_dir=spec.dir or None,
                user=spec.user or None,
                labels=_task.labels(task),
                stop_signal=spec.stop_signal or None,
                healthcheck=_task.requested_health(task),
                ports=hostports.docker_exposed(task) or None,
                tty=spec.tty,
                host_config=host_config,
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in use" in str(exc.explanation):
                return  # prepared before (agent retry or restart): reuse it
            raise

    async def start(self, task: pb.Task) -> ContainerRef:
        """Start the container and look at it (ID, PID, healthcheck); the ``wait`` that follows
        takes that look rather than asking again (``ExitWatch.ahead``)."""
        name = _task.container_name(task)
        with self._exits.ahead(name) as keep:
            state = await self._run(self._start, name)
            health = _task.effective_health(state["Config"].get("Healthcheck"))
            if health is not None:
                state = await self._until_healthy(task, name, health)
            keep(state)
        return ContainerRef(
            task_id=task.id,
            container_id=state["Id"],
            service_id=task.service_id,
            node_id=task.node_id,
            running=bool(state["State"].get("Running")),
            pid=int(state["State"].get("Pid") or 0),
        )

    def _start(self, name: str) -> dict[str, Any]:
        self._api.start(name)
        state: dict[str, Any] = self._api.inspect_container(name)
        return state

    async def _until_healthy(self, task: pb.Task, name: str, health: _task.Health) -> dict[str, Any]:
        """Swarm's executor: a container with a healthcheck has not started until it is healthy.

        Each round is its own short engine call, so a cancelled ``start`` frees its thread
        within one poll period.
        """
        period = health_poll_seconds(health)
        while True:
            state = await self._run(self._inspect, name)
            status = (state["State"].get("Health") or {}).get("Status")
            if status == "healthy":
                return state
            if not state["State"].get("Running"):
                code = await self._run(self._exit_code, name)
                raise RuntimeError_(
                    _task.exited_before_healthy(code, await self._run(self._exit_error, name))
                )
            if status == "unhealthy":
                await self.shutdown(task, task.spec.container.stop_grace_period)
                raise RuntimeError_(_task.UNHEALTHY)
            await self._run(self._wait_once, name, period)

    def _inspect(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = self._api.inspect_container(name)
        return state

    def _exit_code(self, name: str) -> int:
        """The exit code of a container that has stopped (or is stopping)."""
        while True:
            result = self._wait_once(name, WAIT_POLL_SECONDS)
            if result is not None:
                return int(result.get("StatusCode", -1))

    async def wait(self, task: pb.Task) -> ExitStatus:
        """Without a healthcheck, sleep on the shared event stream until the container dies (no
        engine call or thread per running container); with one, poll its health as before."""
        name = _task.container_name(task)
        handed = self._exits.handed(name)
        async with self._exits.watching(name, handed[0] if handed else None) as died:
            state = handed[1] if handed else await self._run(self._inspect, name)
            health = _task.effective_health(state["Config"].get("Healthcheck"))
            while health is None and state["State"].get("Running"):
                await died.wait()
                died.clear()
                state = await self._run(self._inspect, name)
        period = WAIT_POLL_SECONDS if health is None else health_poll_seconds(health)
        while True:
            result = await self._run(self._wait_once, name, period)
            if result is not None:
                break
            if health is not None and await self._run(self._health_status, name) == "unhealthy":
                await self.shutdown(task, task.spec.container.stop_grace_period)
                code = await self._run(self._exit_code, name)
                return ExitStatus(exit_code=code, error=_task.UNHEALTHY)
        code = int(result.get("StatusCode", -1))
        error = str((result.get("Error") or {}).get("Message") or "")
        if code != 0 and not error:
            error = await self._run(self._exit_error, name)
        return ExitStatus(exit_code=code, error=error)

    def _health_status(self, name: str) -> str:
        return str((self._api.inspect_container(name)["State"].get("Health") or {}).get("Status") or "")

    def _wait_once(self, name: str, timeout: float) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._api.wait(name, timeout=timeout)
        except requests.exceptions.ConnectionError as exc:
            if _is_read_timeout(exc):
                return None  # still running: ask again (or stop, if the caller went away)
            raise
        return result

    def _exit_error(self, name: str) -> str:
        """The engine's account of an unclean exit (start failure, OOM kill), if it has one."""
        try:
            state = self._api.inspect_container(name)["State"]
        except docker.errors.NotFound:
            return ""
        if state.get("OOMKilled"):
            return "container killed: out of memory"
        return str(state.get("Error") or "")

    async def shutdown(self, task: pb.Task, grace_seconds: float) -> None:
        await self._run(self._shutdown, _task.container_name(task), _task.stop_seconds(grace_seconds))

    def _shutdown(self, name: str, seconds: int) -> None:
        try:
            self._api.stop(name, timeout=seconds)
        except docker.errors.NotFound:
            pass

    async def remove(self, task: pb.Task) -> None:
        self._exits.forget(_task.container_name(task))  # started, but never waited for
        await self._run(self._remove, task)

    def _remove(self, task: pb.Task) -> None:
        """By name; failing that, whatever carries the task's labels: the agent removes a
        stray container knowing only its labels, not the service name and slot in its name."""
        if not self._remove_one(_task.container_name(task)):
            for entry in self._labelled(task):
                self._remove_one(entry["Id"])
        taskfiles.release(self.files_dir, task.id)

    def _remove_one(self, name_or_id: str) -> bool:
        """False when there is no such container."""
        try:
            self._api.remove_container(name_or_id, v=True, force=True)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise
        return True

    def _labelled(self, task: pb.Task) -> list[dict[str, Any]]:
        labels = [f"{LABEL_NODE_ID}={task.node_id}", f"{LABEL_TASK_ID}={task.id}"]
        found: list[dict[str, Any]] = self._api.containers(all=True, filters={"label": labels})
        return found

    async def find(self, task: pb.Task) -> ContainerRef | None:
        """The task's container, found by its labels in one call (``TaskLookup``)."""
        found = await self._run(self._labelled, task)
        return _ref(found[0]) if found else None

    async def list_containers(self, node_id: str) -> list[ContainerRef]:
        return await self._run(self._list, node_id)

    def _list(self, node_id: str) -> list[ContainerRef]:
        """One request, however many containers the node has (no inspect per container)."""
        found = self._api.containers(all=True, filters={"label": f"{LABEL_NODE_ID}={node_id}"})
        return [_ref(entry) for entry in found]

    def logs(self, task: pb.Task, *, follow: bool, tail: int | None) -> AsyncIterator[LogLine]:
        name = _task.container_name(task)
        params = {
            "stdout": 1,
            "stderr": 1,
            "follow": int(follow),
            "timestamps": 1,
            "tail": "all" if tail is None else str(max(tail, 0)),
        }

        def open_response() -> Any:
            response = self._api._get(
                self._api._url("/containers/{0}/logs", name), params=params, stream=True, timeout=None
            )
            self._api._raise_for_status(response)
            return response

        return stream_logs(open_response, task.id, self._translate)

    def _subscribe_deaths(self) -> Subscription:
        """The engine's ``die`` events of shoal's containers (``ExitWatch``)."""
        filters = {"type": "container", "event": "die", "label": LABEL_TASK_ID}
        stream = self._api.events(decode=True, filters=filters)
        names = (
            str(((event.get("Actor") or {}).get("Attributes") or {}).get("name") or "") for event in stream
        )
        return names, stream.close

    async def close(self) -> None:
        self._exits.close()
        self._api.close()
