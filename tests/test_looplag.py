"""The loop-lag probe behind the manager daemon's loop-lag log line (issue 18): how long the
event loop was held, which Raft ticks and heartbeats wait behind."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest
from shoal.looplag import GCPauses, LoopLagProbe, LoopLagReporter


async def test_the_loop_lag_probe_sees_a_blocked_loop() -> None:
    """The daemon's loop-lag metric: a 150 ms synchronous stretch shows as about 150 ms."""
    async with LoopLagProbe(interval=0.005) as probe:
        await _samples(probe, 2)
        time.sleep(0.15)  # noqa: ASYNC251 -- the blocked stretch the probe must see
        await _samples(probe, probe.samples + 2)
    assert probe.worst_ever >= 0.1
    assert probe.take() >= 0.1
    assert probe.take() == 0.0


async def _samples(probe: LoopLagProbe, count: int) -> None:
    """Until the probe has looked ``count`` times (it runs on its own timer)."""
    while probe.samples < count:  # noqa: ASYNC110 -- the probe has no event to wait on
        await asyncio.sleep(0)


async def test_the_loop_lag_line_says_how_long_the_garbage_collector_held_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every stored task is an object the collector walks: at tens of thousands of tasks a
    full collection is part of a stall, and the line says so (issue 18)."""
    pauses = GCPauses()
    pauses.start()
    try:
        garbage = [[] for _ in range(200_000)]
        for item in garbage:
            item.append(item)  # cycles: only the collector frees them
        del garbage, item
        gc.collect()
        worst, full = pauses.take()
        assert worst > 0 and full >= 1
        assert pauses.take() == (0.0, 0)
    finally:
        pauses.stop()
    reporter = LoopLagReporter(LoopLagProbe(), warn_after=0.0)
    reporter.gc.start()
    try:
        gc.collect()
        with caplog.at_level(logging.WARNING, logger="shoal.looplag"):
            reporter.report()
    finally:
        reporter.gc.stop()
    assert "1 full collection(s)" in caplog.text and "garbage-collector pause" in caplog.text
