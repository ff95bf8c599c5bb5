"""``shoal hollow`` writes its status file off its event loop (issue 18).

The file is replaced with two fsyncs twice a second; on the loop, a disk busy with other work
held the loop of 500 hollow nodes (their heartbeats, status reports, session opens) for as long
as each fsync took."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from shoal.hollow import fleet as fleet_module
from shoal.hollow.fleet import Fleet, FleetConfig
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
