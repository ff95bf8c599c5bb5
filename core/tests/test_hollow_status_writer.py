"""``shoal hollow`` keeps its event loop free for its nodes (issue 18).

Its status file is replaced with two fsyncs twice a second; on the loop, a disk busy with other
work held the loop of 500 hollow nodes (their heartbeats, status reports, session opens) for as
long as each fsync took. Its garbage collector never takes a full pass over the frozen objects
of 500 agents (1.8-2.7 s while 10,000 tasks started: every session of the process timed out)."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path

import pytest
from shoal.gcpolicy import MIN_THAW_SIZE
from shoal.hollow import fleet as fleet_module
from shoal.hollow.fleet import Fleet, FleetConfig, fleet_collector
from shoal.hollow.status import FleetStatus


async def test_the_status_file_is_written_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[threading.Thread] = []
    written = asyncio.Event()
    loop = asyncio.get_running_loop()

    def recorded(path: Path, status: FleetStatus) -> None:
        writers.append(threading.current_thread())
        loop.call_soon_threadsafe(written.set)

    monkeypatch.setattr(fleet_module, "write_status", recorded)
    config = FleetConfig(managers=["127.0.0.1:1"], token="unused", count=2, state_dir=tmp_path)
    reporter = asyncio.create_task(fleet_module._report_status(Fleet(config), config))
    try:
        await asyncio.wait_for(written.wait(), 10)
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
    assert writers and writers[0] is not threading.main_thread(), "written on the event loop's thread"


def test_the_fleet_never_takes_a_full_pass_over_its_frozen_objects() -> None:
    policy = fleet_collector()
    try:
        policy.step()
        # More than a manager's policy lets the frozen set reach before its full pass.
        size = max(MIN_THAW_SIZE, 2 * policy.baseline) + 1
        grown: list[list[int]] = [[] for _ in range(size)]
        policy.step()
        policy.step()
        assert policy.thaws == 0, "a full pass over every agent's objects, on the fleet's loop"
        assert len(grown) > policy.baseline
    finally:
        gc.unfreeze()
