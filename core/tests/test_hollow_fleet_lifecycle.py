"""A hollow fleet stopped while its nodes join stops the nodes already started (issue 18).

A thousand nodes take half a minute to join; a fleet told to stop meanwhile (SIGTERM, or its
start cancelled) used to go on joining every node and only then stop, and a start cancelled
half-way left the nodes it had started running with no one to stop them. The joins and agents
here are stand-ins: what is tested is the fleet's bookkeeping.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from shoal.hollow import fleet as fleet_module
from shoal.hollow.fleet import Fleet, FleetConfig
from shoal.hollow.node import HollowNode

DEADLINE = 10.0
#: The nodes whose join never ends (a manager that does not answer).
STUCK = {"hollow-00002", "hollow-00003"}


class StandInAgent:
    def __init__(self, started: list[str], stopped: list[str], hostname: str) -> None:
        self.hostname = hostname
        self.stopped = stopped
        started.append(hostname)

    async def stop(self) -> None:
        self.stopped.append(self.hostname)


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str], asyncio.Event]:
    """(started, stopped, two started): joins of STUCK nodes never end, the others' do at once."""
    started: list[str] = []
    stopped: list[str] = []
    two_started = asyncio.Event()

    async def join(self: HollowNode, token: str) -> None:
        if self.profile.hostname in STUCK:
            await asyncio.Event().wait()

    async def start(self: HollowNode) -> None:
        self.agent = StandInAgent(started, stopped, self.profile.hostname)  # type: ignore[assignment]
        if len(started) == 2:
            two_started.set()

    monkeypatch.setattr(HollowNode, "join", join)
    monkeypatch.setattr(HollowNode, "start", start)
    return started, stopped, two_started


def config(tmp_path: Path) -> FleetConfig:
    return FleetConfig(
        managers=["127.0.0.1:1"], token="unused", count=4, state_dir=tmp_path, join_concurrency=4
    )


async def test_a_start_cancelled_half_way_stops_the_nodes_it_started(
    tmp_path: Path, nodes: tuple[list[str], list[str], asyncio.Event]
) -> None:
    started, stopped, two_started = nodes
    fleet = Fleet(config(tmp_path))
    starting = asyncio.create_task(fleet.start())
    await asyncio.wait_for(two_started.wait(), DEADLINE)
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    assert sorted(stopped) == sorted(started) == ["hollow-00000", "hollow-00001"]


async def test_a_fleet_told_to_stop_while_its_nodes_join_stops_at_once(
    tmp_path: Path, nodes: tuple[list[str], list[str], asyncio.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    started, stopped, two_started = nodes
    said: list[str] = []
    monkeypatch.setattr(fleet_module, "quiet_logging", lambda: None)  # leave pytest's logging alone
    running = asyncio.create_task(fleet_module.run_fleet(config(tmp_path), said.append))
    await asyncio.wait_for(two_started.wait(), DEADLINE)
    os.kill(os.getpid(), signal.SIGTERM)  # run_fleet's handler takes it (installed before any join)
    try:
        code = await asyncio.wait_for(running, DEADLINE)
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    assert code == 1
    assert said == ["hollow: stopped while the nodes were joining"]
    assert sorted(stopped) == sorted(started) == ["hollow-00000", "hollow-00001"]
