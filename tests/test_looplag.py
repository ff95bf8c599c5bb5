"""The loop-lag probe behind the manager daemon's loop-lag log line (issue 18): how long the
event loop was held, which Raft ticks and heartbeats wait behind."""

from __future__ import annotations

import asyncio
import time

from shoal.looplag import LoopLagProbe


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
