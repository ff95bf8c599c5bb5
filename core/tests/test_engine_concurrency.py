"""A runtime plugin states how many engine operations its engine handles best at once.

The agent's engine gate (``shoal.agent.enginegate``) is as wide as the operator says
(``--max-concurrent-engine-calls``), else as the runtime's class declares
(``engine_concurrency``), else the kernel's default. Logic here, with fakes and an in-process
cluster; what width each shipped runtime declares is tested with its plugin.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner
from shoal.agent.enginegate import DEFAULT_MAX_CONCURRENT_ENGINE_CALLS, BoundedRuntime, engine_call_limit
from shoal.roles.runtime import declared_engine_concurrency
from shoal.testing.cluster import InProcessCluster
from shoal.testing.runtime import make_task
from shoal_runtime_fake.runtime import FakeRuntime


class Silent:
    """A runtime class that declares nothing."""

    role: ClassVar[str] = "runtime"
    api_version: ClassVar[int] = 2


class Wide(Silent):
    engine_concurrency: ClassVar[int] = 3


def test_a_runtime_that_declares_nothing_gets_the_default() -> None:
    assert declared_engine_concurrency(Silent) is None
    assert engine_call_limit(Silent) == DEFAULT_MAX_CONCURRENT_ENGINE_CALLS


def test_the_declared_width_is_the_gate_unless_the_operator_overrides_it() -> None:
    assert declared_engine_concurrency(Wide) == 3
    assert engine_call_limit(Wide) == 3
    assert engine_call_limit(Wide, 5) == 5
    assert engine_call_limit(Silent, 2) == 2


@pytest.mark.parametrize("declared", [0, -4, "16", 2.5, True])
def test_malformed_declarations_are_refused(declared: object) -> None:
    bad = type("Bad", (Silent,), {"engine_concurrency": declared})
    with pytest.raises(TypeError, match="engine_concurrency must be an int of at least 1"):
        declared_engine_concurrency(bad)


class CountingEngine(Silent):
    """Creates that take a while, counting how many run at once."""

    engine_concurrency: ClassVar[int] = 3

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    async def prepare(self, task: Any, files: Any = (), **_: Any) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1


async def test_the_gate_around_a_runtime_is_as_wide_as_it_declares() -> None:
    engine = CountingEngine()
    bounded = BoundedRuntime(engine)  # type: ignore[arg-type]
    assert bounded.limit == 3
    await asyncio.gather(*(bounded.prepare(make_task("img", node_id="n")) for i in range(12)))
    assert engine.peak == 3
    assert BoundedRuntime(engine, 7).limit == 7  # type: ignore[arg-type]


async def test_a_daemon_gates_its_runtime_as_the_plugin_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeRuntime, "engine_concurrency", 5, raising=False)
    async with InProcessCluster(tmp_path, managers=1) as cluster:
        agent = cluster.node("m1").daemon.agent
        assert agent is not None
        assert agent.runtime.limit == 5


def test_the_cli_leaves_the_width_to_the_runtime_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    import shoal.daemon.node
    from shoal.cli.main import cli

    seen: list[int | None] = []

    async def serve(config: Any) -> None:
        seen.append(config.max_engine_calls)

    monkeypatch.setattr(shoal.daemon.node, "serve", serve)
    runner = CliRunner()
    for extra in ([], ["--max-concurrent-engine-calls", "20"]):
        result = runner.invoke(cli, ["daemon", "--state-dir", "/nonexistent/shoal", *extra])
        assert result.exit_code == 0, result.output
    assert seen == [None, 20]
