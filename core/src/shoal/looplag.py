"""Event-loop lag: how late a timer fires, i.e. how long the loop was busy with something else.

A manager's Raft ticks and heartbeats, dispatcher heartbeats and session messages all run on
one event loop. When the orchestrator, scheduler or dispatcher holds the loop for a long
synchronous stretch (thousands of tasks in one go), every timer behind it fires late: past the
election timeout the followers elect a new leader, past three heartbeat periods nodes are
marked Down. ``LoopLagProbe`` sleeps a short interval over and over and records how much later
than asked each sleep returned: the longest stretch the loop could not run anything else.
The manager daemon runs one and logs it; tests run one to check a path yields often enough.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("shoal.looplag")

#: How often the probe looks: short enough to see a 50 ms stall, cheap enough to run always.
PROBE_INTERVAL = 0.01


class LoopLagProbe:
    """Measures how late the event loop runs a timer; the worst since the last ``take``."""

    def __init__(self, interval: float = PROBE_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        #: The longest lag seen since the last ``take`` (seconds).
        self.worst = 0.0
        #: The longest lag seen since the probe started (seconds).
        self.worst_ever = 0.0
        self.samples = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def __aenter__(self) -> LoopLagProbe:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def take(self) -> float:
        """The worst lag since the last call, and start a new window."""
        worst, self.worst = self.worst, 0.0
        return worst

    async def _run(self) -> None:
        while True:
            asked = self._clock()
            await asyncio.sleep(self.interval)
            lag = max(0.0, self._clock() - asked - self.interval)
            self.samples += 1
            self.worst = max(self.worst, lag)
            self.worst_ever = max(self.worst_ever, lag)


class LoopLagReporter:
    """Logs the manager's loop lag: every ``period`` at debug, and at once as a warning when
    one stall was long enough to endanger Raft heartbeats (``warn_after``)."""

    def __init__(self, probe: LoopLagProbe, period: float = 10.0, warn_after: float = 0.5) -> None:
        self.probe = probe
        self.period = period
        self.warn_after = warn_after
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.probe.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-report")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.probe.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            worst = self.probe.take()
            if worst >= self.warn_after:
                log.warning(
                    "event loop blocked for up to %.0f ms in the last %.0f s", worst * 1000, self.period
                )
            else:
                log.debug("event loop lag: worst %.1f ms in the last %.0f s", worst * 1000, self.period)
