"""Docker-specific behaviour beyond the conformance suite, on the real dockerd."""

from __future__ import annotations

import asyncio
import importlib.metadata
import io
import secrets
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import httpx
import pytest
from shoal.ids import new_id
from shoal.proto import objects_pb2 as pb
from shoal.roles import PluginContext, RuntimeError_, RuntimeProvider
from shoal.roles.base import API_VERSIONS
from shoal.runtimekit import task as _task
from shoal.testing.runtime import eventually, make_task, volume
from shoal_runtime_docker import DockerRuntime, plugin
from shoal_runtime_docker.runtime import WAIT_POLL_SECONDS, endpoint_from

pytestmark = pytest.mark.engine

ENDPOINT = "unix:///var/run/docker.sock"


def engine() -> docker.APIClient:
    return docker.APIClient(base_url=ENDPOINT, version="1.41")


@pytest.fixture
async def runtime() -> AsyncIterator[DockerRuntime]:
    provider = DockerRuntime(ENDPOINT)
    yield provider
    await provider.close()


@pytest.fixture
def made(runtime: DockerRuntime) -> list[pb.Task]:
    return []


@pytest.fixture(autouse=True)
async def cleanup(runtime: DockerRuntime, made: list[pb.Task]) -> AsyncIterator[None]:
    yield
    for task in made:
        await runtime.remove(task)


def test_entry_point_builds_the_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="shoal.runtime") if ep.name == "docker"]
    assert entry.load() is plugin
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    context = PluginContext(role="runtime", name="docker", state_dir=tmp_path)
    provider = plugin.shoal_runtime_provider(context=context)
    assert isinstance(provider, RuntimeProvider)
    assert (provider.role, provider.api_version, provider.endpoint) == (
        "runtime",
        API_VERSIONS["runtime"],
        ENDPOINT,
    )
    assert provider.files_dir == tmp_path / "task-files"  # each node's own secrets mounts
    context.options["host"] = "tcp://127.0.0.1:2375"
    assert plugin.shoal_runtime_provider(context=context).endpoint == "tcp://127.0.0.1:2375"


def test_endpoint_precedence() -> None:
    assert endpoint_from({"host": "unix:///a.sock"}, {"DOCKER_HOST": "unix:///b.sock"}) == "unix:///a.sock"
    assert endpoint_from({}, {"DOCKER_HOST": "unix:///b.sock"}) == "unix:///b.sock"
    assert endpoint_from({}, {}) == ENDPOINT


def test_bad_endpoint_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError_, match="invalid docker endpoint 'bogus://x'"):
        DockerRuntime("bogus://x")


async def test_pull_always_pulls_even_a_present_image(runtime: DockerRuntime, made: list[pb.Task]) -> None:
    api = docker.APIClient(base_url=ENDPOINT, version="1.41")
    repo, tag = "127.0.0.1:1/shoal-pull-always", secrets.token_hex(4)
    api.tag("shoal-busybox:1", repo, tag)
    try:
        node = new_id()
        always = make_task(f"{repo}:{tag}", node_id=node, pull_policy=pb.ContainerSpec.PULL_ALWAYS)
        missing = make_task(f"{repo}:{tag}", node_id=node, args=["true"])
        made.extend([always, missing])
        with pytest.raises(RuntimeError_, match=r"127\.0\.0\.1:1") as caught:
            await runtime.prepare(always)
        assert not caught.value.temporary
        await runtime.prepare(missing)  # present locally: no pull, no error
        assert [ref.task_id for ref in await runtime.list_containers(node)] == [missing.id]
    finally:
        for task in made:
            await runtime.remove(task)
        api.remove_image(f"{repo}:{tag}")


async def test_searchsvc_answers_with_its_hostname(runtime: DockerRuntime, made: list[pb.Task]) -> None:
    task = make_task("searchsvc:v1.0", node_id=new_id(), service_name="search", hostname="search-a")
    made.append(task)
    await runtime.prepare(task)
    ref = await runtime.start(task)
    address = docker.APIClient(base_url=ENDPOINT, version="1.41").inspect_container(ref.container_id)[
        "NetworkSettings"
    ]["IPAddress"]
    answers: list[str] = []

    async def answered() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                answers.append((await client.get(f"http://{address}:8080/?q=shoal")).text)
        except httpx.HTTPError:
            return False
        return True

    await eventually(answered, "searchsvc to answer on :8080")
    assert answers[-1].strip() == "search result from search-a for q=shoal"
    began = time.monotonic()
    await runtime.shutdown(task, 10)
    assert time.monotonic() - began < 5, "searchsvc ignored the stop signal"
    assert (await runtime.wait(task)).exit_code == 0


def _threads(prefix: str) -> int:
    return sum(1 for thread in threading.enumerate() if thread.name.startswith(prefix))


async def test_abandoned_wait_and_logs_release_their_threads(
    runtime: DockerRuntime, made: list[pb.Task]
) -> None:
    task = make_task("shoal-busybox:1", node_id=new_id(), command=["sh", "-c", "echo up; exec sleep 3600"])
    made.append(task)
    await runtime.prepare(task)
    await runtime.start(task)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runtime.wait(task), 0.2)
    stream = runtime.logs(task, follow=True, tail=None)
    assert (await anext(stream)).text == "up"
    assert _threads("shoal-logs-") >= 1
    await stream.aclose()  # type: ignore[attr-defined]

    async def released() -> bool:
        return _threads("shoal-logs-") == 0 and _threads("shoal-runtime-_wait_once") == 0

    await eventually(released, "wait and logs threads to end", deadline=WAIT_POLL_SECONDS + 5)


async def test_unreachable_engine_error_names_the_endpoint(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path}/no-engine.sock"
    provider = DockerRuntime(endpoint)
    with pytest.raises(RuntimeError_) as caught:
        await provider.list_containers(new_id())
    assert caught.value.temporary
    assert endpoint in str(caught.value) and "unreachable" in str(caught.value)
    await provider.close()


def _volumes() -> set[str]:
    return {entry["Name"] for entry in engine().volumes().get("Volumes") or []}


async def test_remove_deletes_the_containers_anonymous_volumes(
    runtime: DockerRuntime, made: list[pb.Task]
) -> None:
    task = make_task("shoal-busybox:1", node_id=new_id(), command=["true"], mounts=[volume("", "/anon")])
    made.append(task)
    before = _volumes()
    await runtime.prepare(task)
    assert len(_volumes() - before) == 1, "no anonymous volume was created"
    await runtime.remove(task)
    assert not _volumes() - before, "remove left the anonymous volume behind"


@pytest.fixture
async def image_with_healthcheck(runtime: DockerRuntime, made: list[pb.Task]) -> AsyncIterator[str]:
    """A local image whose HEALTHCHECK passes once /tmp/ready exists."""
    tag = f"shoal-health-{secrets.token_hex(4)}:1"
    dockerfile = b"FROM shoal-busybox:1\nHEALTHCHECK --interval=1s --retries=30 CMD test -f /tmp/ready\n"
    for _ in engine().build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, decode=True):
        pass
    yield tag
    for task in made:  # before the image, which a forced removal would stop them for
        await runtime.remove(task)
    engine().remove_image(tag, force=True)


async def test_the_images_healthcheck_is_run_unless_the_spec_disables_it(
    runtime: DockerRuntime, made: list[pb.Task], image_with_healthcheck: str
) -> None:
    kept = make_task(
        image_with_healthcheck,
        node_id=new_id(),
        command=["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 3600"],
    )
    disabled = make_task(
        image_with_healthcheck,
        node_id=new_id(),
        args=["sleep", "3600"],
        healthcheck=pb.HealthConfig(test=["NONE"]),
    )
    made += [kept, disabled]
    for task in (kept, disabled):
        await runtime.prepare(task)
    await asyncio.wait_for(runtime.start(kept), 30)
    assert engine().inspect_container(_task.container_name(kept))["State"]["Health"]["Status"] == "healthy"

    began = time.monotonic()
    await asyncio.wait_for(runtime.start(disabled), 30)  # never ready: only "none" lets it start
    assert time.monotonic() - began < 5
    assert "Health" not in engine().inspect_container(_task.container_name(disabled))["State"]


async def test_waiting_on_many_containers_costs_one_event_stream(
    runtime: DockerRuntime, made: list[pb.Task]
) -> None:
    """Issue 13 defect 3: a wait per running container used to hold a thread and a connection
    to dockerd each for as long as the container ran (10,000 replicas: 10,000 of each)."""
    node_id = new_id()
    tasks = [
        make_task("shoal-busybox:1", node_id=node_id, args=["sleep", "3600"], slot=n) for n in range(1, 11)
    ]
    made.extend(tasks)
    for task in tasks:
        await runtime.prepare(task)
        await runtime.start(task)
    waits = [asyncio.ensure_future(runtime.wait(task)) for task in tasks]
    try:
        done, _ = await asyncio.wait(waits, timeout=1.0)
        assert not done, "a wait returned while its container runs"
        assert _threads("shoal-runtime-") <= 2, [t.name for t in threading.enumerate()]
        engine().kill(_task.container_name(tasks[0]))
        status = await asyncio.wait_for(waits[0], 10)
        assert status.exit_code == 137
        assert not any(wait.done() for wait in waits[1:])
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def test_the_wait_after_a_start_asks_the_engine_nothing_and_still_sees_a_death(
    runtime: DockerRuntime, made: list[pb.Task], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start's look at the container (ID, PID, healthcheck) is handed to the wait that
    follows, which used to inspect the container again: one engine call per task fewer. A
    container that dies between the start and the wait is still seen to have died."""
    node_id = new_id()
    first, second, third = (
        make_task("shoal-busybox:1", node_id=node_id, args=["sleep", "3600"], slot=n) for n in (1, 2, 3)
    )
    made += [first, second, third]
    for task in (first, second, third):
        await runtime.prepare(task)
    await runtime.start(first)
    opened = asyncio.ensure_future(runtime.wait(first))  # the event stream is open from here
    looks: list[str] = []
    real_inspect = runtime._api.inspect_container

    def counting_inspect(name: str) -> object:
        if name == _task.container_name(second):
            looks.append(name)
        return real_inspect(name)

    try:
        await eventually(lambda: _stream_open(runtime), "the event stream open", deadline=10)
        monkeypatch.setattr(runtime._api, "inspect_container", counting_inspect)
        await runtime.start(second)
        assert len(looks) == 1  # the start's own
        waiting = asyncio.ensure_future(runtime.wait(second))
        done, _ = await asyncio.wait([waiting], timeout=1.0)
        assert not done
        assert len(looks) == 1, looks
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)

        await runtime.start(third)
        engine().kill(_task.container_name(third), signal="KILL")
        status = await asyncio.wait_for(runtime.wait(third), 10)
        assert status.exit_code == 137
    finally:
        opened.cancel()
        await asyncio.gather(opened, return_exceptions=True)


async def _stream_open(runtime: DockerRuntime) -> bool:
    return runtime._exits._open.is_set()
