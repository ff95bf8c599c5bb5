"""shoal-scheduler-binpack: conformance, and binpack vs spread on the same cluster."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from shoal.loader import PluginLoader
from shoal.plugin import SchedulerProvider
from shoal.testing.scheduler import GIB, SchedulerConformance, make_node, make_tasks, node_infos
from shoal_scheduler_binpack.scheduler import BinpackScheduler


class TestBinpackConformance(SchedulerConformance):
    @pytest.fixture
    def scheduler(self) -> BinpackScheduler:
        return BinpackScheduler()


def load_scheduler(name: str, tmp_path: Path) -> SchedulerProvider:
    """Build a scheduler exactly as a shoal manager does: entry point, hook, checks."""
    plugins = PluginLoader(selection={"scheduler": name})
    return plugins.provider("scheduler", plugins.make_context("scheduler", tmp_path / name))


@pytest.mark.asyncio
async def test_binpack_packs_where_spread_spreads(tmp_path: Path) -> None:
    nodes = [make_node(f"node{i}") for i in range(4)]
    tasks = make_tasks(6, memory_bytes=GIB)

    binpack = load_scheduler("binpack", tmp_path)
    spread = load_scheduler("spread", tmp_path)
    assert isinstance(binpack, BinpackScheduler)

    packed = Counter(p.node_id for p in await binpack.schedule(tasks, node_infos(nodes)))
    spreaded = Counter(p.node_id for p in await spread.schedule(tasks, node_infos(nodes)))

    assert packed == {"node0": 6}
    assert sorted(spreaded.values()) == [1, 1, 2, 2]


@pytest.mark.asyncio
async def test_binpack_moves_on_when_the_fullest_node_is_full() -> None:
    nodes = [make_node("small", memory_bytes=2 * GIB), make_node("big", memory_bytes=8 * GIB)]
    infos = node_infos(nodes)
    placements = await BinpackScheduler().schedule(make_tasks(5, memory_bytes=GIB), infos)
    # Equal task counts: the node with less free memory is fuller, so "small" fills first.
    assert [p.node_id for p in placements] == ["small", "small", "big", "big", "big"]


def test_plugin_ls_lists_binpack() -> None:
    shoal = Path(sys.executable).with_name("shoal")
    out = subprocess.run([str(shoal), "plugin", "ls"], capture_output=True, text=True, check=True).stdout
    (row,) = [line.split() for line in out.splitlines() if line.split()[:2] == ["scheduler", "binpack"]]
    assert row == ["scheduler", "binpack", "shoal-scheduler-binpack", "0.1.0", "2"]
