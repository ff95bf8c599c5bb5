"""``PodmanRuntime``: the runtime role on podman's REST service, through podman-py.

We speak podman's own (libpod) API through podman-py's ``APIClient`` rather than its
high-level managers, which re-inspect after every create and start; the end-to-end benchmark
(50 replicas to running) is dominated by engine round trips. Containers are addressed by their
Swarm-style name, which the task alone determines, so no ID cache is needed and a restarted
agent finds its containers again.

Podman specifics handled here: containers get explicit ``nofile``/``nproc`` ulimits (without
them they fail to start on the machines we target), the stop signal goes over as a number,
and short image names (``searchsvc:v1.0``) resolve against local storage, where ``podman
import`` stores them as ``localhost/<name>``, before any pull is attempted.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import podman.api
import podman.errors
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
from shoal.runtimekit.bridge import abort_response, call
from shoal.runtimekit.exits import ExitWatch, Subscription
from shoal.runtimekit.logs import stream_logs

T = TypeVar("T")

DEFAULT_ENDPOINT = "unix:///run/podman/podman.sock"
#: URL prefix version for the libpod API; podman 4.0 and later serve it.
API_VERSION = "4.0.0"
#: Per-request timeout for calls that should answer promptly.
REQUEST_TIMEOUT = 60.0
#: ``wait`` re-issues its request this often so that a cancelled wait frees its thread.
WAIT_POLL_SECONDS = 5.0
#: The shortest ``wait`` request: below this the round trip itself dominates.
MIN_WAIT_SECONDS = 0.05
#: Explicit ulimits: podman's defaults make containers fail on our target machines.
ULIMITS = [
    {"type": "nofile", "soft": 1024, "hard": 1024},
    {"type": "nproc", "soft": 1024, "hard": 1024},
]
CPU_PERIOD = 100_000

_PULL_ALWAYS = pb.ContainerSpec.PULL_ALWAYS
_HEALTH_DEFAULTS = {
    "Interval": round(_task.DEFAULT_HEALTH_INTERVAL * 1e9),
    "Timeout": round(_task.DEFAULT_HEALTH_TIMEOUT * 1e9),
    "Retries": _task.DEFAULT_HEALTH_RETRIES,
}
_PULL_MISSING = pb.ContainerSpec.PULL_MISSING


def endpoint_from(options: dict[str, str], environ: dict[str, str] | None = None) -> str:
    """``host`` option, else ``CONTAINER_HOST``, else the system service socket."""
    env = os.environ if environ is None else environ
    return options.get("host") or env.get("CONTAINER_HOST") or DEFAULT_ENDPOINT


def signal_number(name: str) -> int:
    """``SIGUSR1``, ``USR1`` or ``10`` -> 10; libpod takes the stop signal as a number."""
    text = name.strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise RuntimeError_(f"unknown stop signal {name!r}") from None


def env_map(entries: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` entries as libpod's map; a bare ``KEY`` (docker: "unset") is dropped."""
    return {key: value for key, sep, value in (entry.partition("=") for entry in entries) if sep}


def storage(spec: pb.ContainerSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The spec's mounts as libpod wants them: ``(mounts, volumes)``. Binds and tmpfs are OCI
    mounts; named volumes are libpod volumes (created if missing; an empty name makes an
    anonymous one, which removing the container with ``volumes`` deletes)."""
    oci: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    for mount in spec.mounts:
        options = ["ro"] if mount.readonly else []
        if mount.type == pb.Mount.VOLUME:
            volumes.append({"Name": mount.source, "Dest": mount.target, "Options": options})
        elif mount.type == pb.Mount.TMPFS:
            if mount.tmpfs_size_bytes:
                options.append(f"size={mount.tmpfs_size_bytes}")
            oci.append({"Type": "tmpfs", "Source": "tmpfs", "Destination": mount.target, "Options": options})
        else:
            oci.append(
                {"Type": "bind", "Source": mount.source, "Destination": mount.target, "Options": options}
            )
    return oci, volumes


def container_options(task: pb.Task) -> dict[str, Any]:
    """The spec's container options (``--cap-add``, ``--dns``, ``--ulimit``...) in libpod's
    SpecGenerator shape; unset ones are left out (podman's defaults). A task on swarm networks
    asks the network provider's resolver first (``_task.nameservers``)."""
    spec = task.spec.container
    given = {u["Name"] for u in _task.ulimits(task)}
    options: dict[str, Any] = {
        "r_limits": [u for u in ULIMITS if u["type"] not in given]
        + [{"type": u["Name"], "soft": u["Soft"], "hard": u["Hard"]} for u in _task.ulimits(task)],
        "dns_server": _task.nameservers(task),
        "dns_search": list(spec.dns_config.search),
        "dns_option": list(spec.dns_config.options),
        "cap_add": list(spec.capability_add),
        "cap_drop": list(spec.capability_drop),
        "sysctl": dict(spec.sysctls),
        "hostadd": _task.extra_hosts(task),
        "groups": list(spec.groups),
        "terminal": spec.tty,
        "init": spec.init,
    }
    if task.spec.log_driver.name:
        options["log_configuration"] = {
            "driver": task.spec.log_driver.name,
            "options": dict(task.spec.log_driver.options),
        }
    chosen = {key: value for key, value in options.items() if value}
    if spec.read_only:  # as docker's: no writable tmpfs on /tmp, /run... added behind the user's back
        chosen.update(read_only_filesystem=True, read_write_tmpfs=False)
    return chosen


def healthconfig(task: pb.Task) -> dict[str, Any] | None:
    """The spec's healthcheck with podman's CLI defaults where the spec says 0 (libpod's API
    would take a literal 0: zero retries means unhealthy on the first failure)."""
    requested = _task.requested_health(task)
    if requested is None or requested["Test"] == ["NONE"]:
        return requested
    return {**requested, **{key: value for key, value in _HEALTH_DEFAULTS.items() if not requested[key]}}


class _EngineError(RuntimeError_):
    """A non-success answer, keeping its HTTP status and libpod ``cause`` for decisions."""

    def __init__(self, message: str, *, status: int, cause: str) -> None:
        super().__init__(message)
        self.status = status
        self.cause = cause


def _health_status(inspected: dict[str, Any]) -> str:
    """The health status in a container's inspect answer (podman 4 names it either way)."""
    state = inspected["State"]
    return str((state.get("Health") or state.get("Healthcheck") or {}).get("Status") or "")


def _pause(until: float) -> float:
    """How long a ``wait`` round may block before the next healthcheck is due."""
    return min(max(until - time.monotonic(), MIN_WAIT_SECONDS), WAIT_POLL_SECONDS)


def _is_read_timeout(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    return any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection error."""
    seen: BaseException = exc
    for _ in range(6):
        inner = next((arg for arg in seen.args if isinstance(arg, BaseException)), None)
        inner = inner or seen.__cause__
        if inner is None:
            break
        seen = inner
    return getattr(seen, "strerror", None) or str(seen)


def _checked(response: Any, *ok: int) -> Any:
    """Return ``response`` if its status is in ``ok``, else raise with libpod's message."""
    if response.status_code in ok:
        return response
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or response.text or f"HTTP {response.status_code}").strip()
    raise _EngineError(message, status=response.status_code, cause=str(body.get("cause") or ""))


def _ref(entry: dict[str, Any]) -> ContainerRef:
    """A container as libpod's list shows it: exit code and PID included."""
    stopped = entry.get("State") not in ("running", "created", "configured", "initialized")
    exit_code = int(entry.get("ExitCode", 0)) if stopped else None
    return _task.listed_container(entry, exit_code=exit_code, pid=int(entry.get("Pid") or 0))


class PodmanRuntime:
    """Runs this node's tasks as containers on one podman service."""

    role: ClassVar[str] = "runtime"
    api_version: ClassVar[int] = 2
    #: Engine operations the agent runs at once on podman (``--max-concurrent-engine-calls``
    #: overrides it). podman's REST service created and started 50 containers 1.2-1.4x faster
    #: all at once than 8 at a time, where dockerd was not faster at all (docs/benchmarks.md,
    #: issue 18 item 4); 16 takes most of that gain while a backlog of hundreds still reaches
    #: the service a bounded number at a time.
    engine_concurrency: ClassVar[int] = 16

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, files_dir: Path = taskfiles.DEFAULT_DIR) -> None:
        self.endpoint = endpoint
        #: Where each task's secrets and configs tmpfs is mounted (``shoal.runtimekit.taskfiles``).
        self.files_dir = files_dir
        try:
            # No client-wide timeout: followed logs must be able to wait for output forever.
            # Every other request passes its own.
            self._api: Any = podman.api.APIClient(base_url=endpoint, version=API_VERSION, max_pool_size=128)
        except (ValueError, podman.errors.PodmanError) as exc:
            raise RuntimeError_(f"invalid podman endpoint {endpoint!r}: {exc}") from exc
        self._exits = ExitWatch(self._subscribe_deaths, endpoint)

    @classmethod
    def from_context(cls, context: PluginContext) -> PodmanRuntime:
        return cls(endpoint_from(context.options), files_dir=context.state_dir / "task-files")

    # ------------------------------------------------------------------ plumbing

    def _translate(self, exc: BaseException) -> BaseException:
        """Map SDK exceptions to ``RuntimeError_``: engine words, temporary when unreachable."""
        if isinstance(exc, RuntimeError_):
            return exc
        if isinstance(exc, podman.errors.APIError) and exc.response is None:
            if _is_read_timeout(exc.__cause__):
                return RuntimeError_(f"podman at {self.endpoint} did not answer in time", temporary=True)
            return RuntimeError_(f"podman at {self.endpoint} is unreachable: {_reason(exc)}", temporary=True)
        if isinstance(exc, requests.exceptions.RequestException):
            return RuntimeError_(f"podman at {self.endpoint} is unreachable: {_reason(exc)}", temporary=True)
        if isinstance(exc, podman.errors.DockerException):
            return RuntimeError_(str(exc))
        return exc

    async def _run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        try:
            return await call(fn, *args, **kwargs)
        except Exception as exc:
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    @staticmethod
    def _path(name: str, action: str = "") -> str:
        return f"/containers/{name}/{action}" if action else f"/containers/{name}"

    # ------------------------------------------------------------------ role API

    async def describe(self) -> EngineInfo:
        response = await self._run(self._api.get, "/info", timeout=REQUEST_TIMEOUT)
        info = _checked(response, 200).json()
        host = info.get("host") or {}
        return EngineInfo(
            hostname=str(host.get("hostname", "")),
            os=str(host.get("os", "")),
            arch=_task.normalise_arch(str(host.get("arch", ""))),
            nano_cpus=int(host.get("cpus", 0)) * 1_000_000_000,
            memory_bytes=int(host.get("memTotal", 0)),
            engine_version=str((info.get("version") or {}).get("Version", "")),
            labels={},
        )

    async def prepare(
        self, task: pb.Task, files: Sequence[TaskFile] = (), *, registry_auth: RegistryAuth | None = None
    ) -> None:
        _task.check(task)
        taskfiles.check(files)
        spec = task.spec.container
        if spec.stop_signal:
            signal_number(spec.stop_signal)  # refuse a bad signal before touching the engine
        await self._run(self._prepare, task, files, registry_auth)

    def _prepare(self, task: pb.Task, files: Sequence[TaskFile], auth: RegistryAuth | None = None) -> None:
        """Create the container, pulling first or on a miss as the pull policy says.

        Creating straight away (rather than asking whether the image exists) costs one round
        trip when the image is present, which is the common case.
        """
        binds = taskfiles.materialise(self.files_dir, task.id, files)
        policy = task.spec.container.pull_policy
        if policy == _PULL_ALWAYS:
            self._pull(task.spec.container.image, "always", auth)
        try:
            self._create(task, binds)
            return
        except _EngineError as exc:
            if exc.cause != "image not known" or policy != _PULL_MISSING:
                raise
        self._pull(task.spec.container.image, "missing", auth)
        self._create(task, binds)

    def _pull(self, image: str, policy: str, auth: RegistryAuth | None = None) -> None:
        """Pull ``image``; with ``auth`` (``--with-registry-auth``) in podman's
        ``X-Registry-Auth`` header (base64url of docker's AuthConfig JSON), never on disk."""
        headers = {}
        if auth is not None:
            encoded = base64.urlsafe_b64encode(json.dumps(auth.docker_auth_config()).encode())
            headers["X-Registry-Auth"] = encoded.decode()
        response = self._api.post(
            "/images/pull",
            params={"reference": image, "policy": policy, "quiet": True},
            headers=headers,
            timeout=None,
        )
        _checked(response, 200)
        for line in response.text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("error"):
                raise RuntimeError_(str(event["error"]))

    def _create(self, task: pb.Task, binds: Sequence[taskfiles.Bind] = ()) -> None:
        spec = task.spec.container
        body: dict[str, Any] = {
            "name": _task.container_name(task),
            "image": spec.image,
            "labels": _task.labels(task),
        }
        if spec.command:
            body["entrypoint"] = list(spec.command)
        if spec.args:
            body["command"] = list(spec.args)
        if spec.env:
            body["env"] = env_map(list(spec.env))
        if spec.hostname:
            body["hostname"] = spec.hostname
        if spec.dir:
            body["work_dir"] = spec.dir
        if spec.user:
            body["user"] = spec.user
        if spec.stop_signal:
            body["stop_signal"] = signal_number(spec.stop_signal)
        mounts, volumes = storage(spec)
        mounts += [
            {"Type": "bind", "Source": b.source, "Destination": b.target, "Options": ["ro"]} for b in binds
        ]
        if mounts:
            body["mounts"] = mounts
        if volumes:
            body["volumes"] = volumes
        health = healthconfig(task)
        if health is not None:
            body["healthconfig"] = health
        nano_cpus, memory = _task.limits(task)
        limits: dict[str, Any] = {}
        if nano_cpus:
            limits["cpu"] = {"quota": nano_cpus * CPU_PERIOD // 1_000_000_000, "period": CPU_PERIOD}
        if memory:
            limits["memory"] = {"limit": memory}
        if _task.pids_limit(task):
            limits["pids"] = {"limit": _task.pids_limit(task)}
        if limits:
            body["resource_limits"] = limits
        body.update(container_options(task))
        mappings = hostports.podman_mappings(task)
        if mappings:  # mode=host published ports: bound by podman (netavark) on this node
            body["portmappings"] = mappings
        response = self._api.post("/containers/create", data=json.dumps(body), timeout=REQUEST_TIMEOUT)
        try:
            _checked(response, 201)
        except _EngineError as exc:
            if exc.cause == "that name is already in use":
                return  # prepared before (agent retry or restart): reuse it
            raise

    async def start(self, task: pb.Task) -> ContainerRef:
        """Start the container and look at it (ID, PID, healthcheck); the ``wait`` that follows
        takes that look rather than asking again (``ExitWatch.ahead``)."""
        name = _task.container_name(task)
        with self._exits.ahead(name) as keep:
            state = await self._run(self._start, name)
            health = _task.effective_health(state["Config"].get("Healthcheck"))
            if health is not None and _health_status(state) != "healthy":  # healthy: started before
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
        _checked(self._api.post(self._path(name, "start"), timeout=REQUEST_TIMEOUT), 204, 304)
        return self._inspect(name)

    def _inspect(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = _checked(
            self._api.get(self._path(name, "json"), timeout=REQUEST_TIMEOUT), 200
        ).json()
        return state

    async def _until_healthy(self, task: pb.Task, name: str, health: _task.Health) -> dict[str, Any]:
        """Swarm's executor: a container with a healthcheck has not started until it is healthy.

        Like dockerd, the first check runs one interval after the start. Every round is its
        own short engine call, so a cancelled ``start`` frees its thread within one round.
        """
        next_check = time.monotonic() + health.interval
        while True:
            code = await self._run(self._wait_once, name, _pause(next_check))
            if code is not None:
                error = await self._run(self._exit_error, name)
                raise RuntimeError_(_task.exited_before_healthy(code, error))
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + health.interval
            status = await self._run(self._check_health, name, health)
            if status == "healthy":
                return await self._run(self._inspect, name)
            if status == "unhealthy":
                await self.shutdown(task, task.spec.container.stop_grace_period)
                raise RuntimeError_(_task.UNHEALTHY)

    def _check_health(self, name: str, health: _task.Health) -> str:
        """Run the container's healthcheck once; the container's resulting health status
        ("" if it is not running).

        The endpoint's own answer only says whether this one check passed; the status that
        counts (after ``retries`` failures, outside the start period) is the one podman then
        records on the container, so we read that.
        """
        response = self._api.get(self._path(name, "healthcheck"), timeout=health.timeout + REQUEST_TIMEOUT)
        if response.status_code == 409:  # not running (any more): the next wait sees the exit
            return ""
        _checked(response, 200)
        return _health_status(self._inspect(name))

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
        next_check = time.monotonic() + (health.interval if health else 0)
        while True:
            code = await self._run(self._wait_once, name, _pause(next_check) if health else WAIT_POLL_SECONDS)
            if code is not None:
                break
            if health is None or time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + health.interval
            if await self._run(self._check_health, name, health) == "unhealthy":
                await self.shutdown(task, task.spec.container.stop_grace_period)
                code = await self._run(self._exit_code, name)
                return ExitStatus(exit_code=code, error=_task.UNHEALTHY)
        error = await self._run(self._exit_error, name) if code != 0 else ""
        return ExitStatus(exit_code=code, error=error)

    def _exit_code(self, name: str) -> int:
        """The exit code of a container that has stopped (or is stopping)."""
        while True:
            code = self._wait_once(name, WAIT_POLL_SECONDS)
            if code is not None:
                return code

    def _wait_once(self, name: str, timeout: float) -> int | None:
        try:
            response = self._api.post(
                self._path(name, "wait"),
                params={"condition": ["stopped", "exited"]},
                timeout=timeout,
            )
        except podman.errors.APIError as exc:
            if exc.response is None and _is_read_timeout(exc.__cause__):
                return None  # still running: ask again (or stop, if the caller went away)
            raise
        return int(_checked(response, 200).json())

    def _exit_error(self, name: str) -> str:
        """The engine's account of an unclean exit (start failure, OOM kill), if it has one."""
        response = self._api.get(self._path(name, "json"), timeout=REQUEST_TIMEOUT)
        if response.status_code == 404:
            return ""
        state = _checked(response, 200).json()["State"]
        if state.get("OOMKilled"):
            return "container killed: out of memory"
        return str(state.get("Error") or "")

    async def shutdown(self, task: pb.Task, grace_seconds: float) -> None:
        await self._run(self._shutdown, _task.container_name(task), _task.stop_seconds(grace_seconds))

    def _shutdown(self, name: str, seconds: int) -> None:
        response = self._api.post(
            self._path(name, "stop"), params={"timeout": seconds}, timeout=seconds + REQUEST_TIMEOUT
        )
        _checked(response, 204, 304, 404)

    async def remove(self, task: pb.Task) -> None:
        self._exits.forget(_task.container_name(task))  # started, but never waited for
        await self._run(self._remove, task)

    def _remove(self, task: pb.Task) -> None:
        """By name; failing that, whatever carries the task's labels: the agent removes a
        stray container knowing only its labels, not the service name and slot in its name."""
        if not self._remove_one(_task.container_name(task)):
            for entry in self._labelled([f"{LABEL_NODE_ID}={task.node_id}", f"{LABEL_TASK_ID}={task.id}"]):
                self._remove_one(entry["Id"])
        taskfiles.release(self.files_dir, task.id)

    def _remove_one(self, name_or_id: str) -> bool:
        """False when there is no such container."""
        # timeout=0: a forced removal kills at once instead of waiting the stop timeout.
        # ``volumes`` (libpod's name; ``v`` is the docker-compatible API's) removes the
        # container's anonymous volumes with it.
        response = self._api.delete(
            self._path(name_or_id),
            params={"force": True, "volumes": True, "timeout": 0},
            timeout=REQUEST_TIMEOUT,
        )
        return bool(_checked(response, 200, 204, 404).status_code != 404)

    def _labelled(self, labels: list[str]) -> list[dict[str, Any]]:
        """One request: libpod's list already carries exit codes and PIDs."""
        filters = json.dumps({"label": labels})
        response = self._api.get(
            "/containers/json", params={"all": True, "filters": filters}, timeout=REQUEST_TIMEOUT
        )
        return list(_checked(response, 200).json() or [])

    async def find(self, task: pb.Task) -> ContainerRef | None:
        """The task's container, found by its labels in one call (``TaskLookup``)."""
        labels = [f"{LABEL_NODE_ID}={task.node_id}", f"{LABEL_TASK_ID}={task.id}"]
        found = await self._run(self._labelled, labels)
        return _ref(found[0]) if found else None

    async def list_containers(self, node_id: str) -> list[ContainerRef]:
        return await self._run(self._list, node_id)

    def _list(self, node_id: str) -> list[ContainerRef]:
        return [_ref(entry) for entry in self._labelled([f"{LABEL_NODE_ID}={node_id}"])]

    def logs(self, task: pb.Task, *, follow: bool, tail: int | None) -> AsyncIterator[LogLine]:
        name = _task.container_name(task)
        params: dict[str, Any] = {"stdout": True, "stderr": True, "follow": follow, "timestamps": True}
        if tail is not None:
            params["tail"] = str(max(tail, 0))

        def open_response() -> Any:
            response = self._api.get(self._path(name, "logs"), params=params, stream=True, timeout=None)
            return _checked(response, 200)

        return stream_logs(open_response, task.id, self._translate)

    def _subscribe_deaths(self) -> Subscription:
        """libpod's ``died`` events of shoal's containers (``ExitWatch``). libpod filters on a
        label only with its value, so the label is checked here. ``since`` a second ago: the
        answer may come before libpod has begun to follow its event log, and what is replayed
        only makes a waiter look once more."""
        filters = json.dumps({"type": ["container"], "event": ["died"]})
        params = {"stream": True, "since": str(int(time.time()) - 1), "filters": filters}
        response = _checked(self._api.get("/events", params=params, stream=True, timeout=None), 200)

        def names() -> Iterator[str]:
            for line in response.iter_lines():
                if not line:
                    continue
                attributes = (json.loads(line).get("Actor") or {}).get("Attributes") or {}
                if LABEL_TASK_ID in attributes:
                    yield str(attributes.get("name") or "")

        return names(), lambda: abort_response(response)

    async def close(self) -> None:
        self._exits.close()
        self._api.close()
