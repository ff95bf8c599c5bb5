"""The fake runtime's own knobs: options through the loader, delays, failures, exits, engines."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from shoal.loader import PluginError, PluginLoader
from shoal.plugin import RuntimeError_
from shoal.testing.runtime import make_task
from shoal_runtime_fake import FakeOptions, FakeRuntime, engine_named


def _built(tmp_path: Path, **options: str) -> FakeRuntime:
    loader = PluginLoader({"runtime": "fake"}, {"runtime": options})
    provider = loader.provider("runtime", loader.make_context("runtime", tmp_path))
    assert isinstance(provider, FakeRuntime)
    return provider


async def test_options_reach_describe_through_the_loader(tmp_path: Path) -> None:
    runtime = _built(tmp_path, hostname="hollow-7", cpus="8", memory_bytes="1024", labels="zone=a,rack=r1")
    info = await runtime.describe()
    assert (info.hostname, info.nano_cpus, info.memory_bytes) == ("hollow-7", 8_000_000_000, 1024)
    assert info.labels == {"zone": "a", "rack": "r1"}
    assert info.engine_version.startswith("fake-")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"failure_rate": "2"}, "runtime.failure_rate"),
        ({"start_delay": "soon"}, "runtime.start_delay"),
        ({"cpus": "0"}, "runtime.cpus"),
        ({"labels": "zone"}, "runtime.labels"),
        ({"colour": "blue"}, "runtime.colour"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(tmp_path: Path, options: dict[str, str], named: str) -> None:
    with pytest.raises(PluginError) as caught:
        _built(tmp_path, **options)
    message = str(caught.value)
    assert named in message and "\n" not in message


async def test_start_delay_and_failure_rate() -> None:
    slow = FakeRuntime(FakeOptions(start_delay=0.2))
    task = make_task("img", node_id="n1", args=["sleep", "60"])
    await slow.prepare(task)
    began = time.monotonic()
    await slow.start(task)
    assert time.monotonic() - began >= 0.2
    await slow.remove(task)

    failing = FakeRuntime(FakeOptions(failure_rate=1.0, seed=3))
    doomed = make_task("img", node_id="n1")
    await failing.prepare(doomed)
    with pytest.raises(RuntimeError_) as caught:
        await failing.start(doomed)
    assert not caught.value.temporary and "injected" in str(caught.value)


async def test_failures_are_replayed_from_the_seed() -> None:
    async def outcomes(seed: int) -> list[bool]:
        runtime = FakeRuntime(FakeOptions(failure_rate=0.5, seed=seed))
        results = []
        for _ in range(20):
            task = make_task("img", node_id="n1")
            await runtime.prepare(task)
            try:
                await runtime.start(task)
                results.append(True)
            except RuntimeError_:
                results.append(False)
        return results

    first = await outcomes(11)
    assert first == await outcomes(11)
    assert True in first and False in first


async def test_exit_after_ends_every_container_with_the_exit_code() -> None:
    runtime = FakeRuntime(FakeOptions(exit_after=0.1, exit_code=5))
    task = make_task("img", node_id="n1")  # the image's default command: runs on
    await runtime.prepare(task)
    await runtime.start(task)
    status = await asyncio.wait_for(runtime.wait(task), 5)
    assert status.exit_code == 5


async def test_providers_naming_one_engine_share_its_containers() -> None:
    name = f"shared-{time.monotonic_ns()}"
    first = FakeRuntime(FakeOptions(engine=name))
    task = make_task("img", node_id="n1", args=["sleep", "60"])
    await first.prepare(task)
    await first.start(task)
    again = FakeRuntime(FakeOptions(engine=name))  # a daemon restarted in the same process
    assert [ref.task_id for ref in await again.list_containers("n1")] == [task.id]
    assert engine_named(name) is first.engine
    private = FakeRuntime()
    assert await private.list_containers("n1") == []
    await again.remove(task)
