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
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("shoal.looplag")

#: How often the probe looks: short enough to see a 50 ms stall, cheap enough to run always.
PROBE_INTERVAL = 0.01
#: A collection at least this long is logged on its own (which generation, how much it freed).
SLOW_COLLECTION = 0.1


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


class GCPauses:
    """The longest pause of Python's cyclic garbage collector since the last ``take``.

    A full collection walks every tracked object, and every stored task is one (protobuf
    messages are tracked): at tens of thousands of tasks a pause is part of the loop lag, and
    the log line says how much, so a stall is not blamed on the code that happened to run."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._began = 0.0
        self._began_cpu = 0.0
        #: The longest pause since the last ``take`` (seconds), and the full collections.
        self.worst = 0.0
        self.full_collections = 0

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def take(self) -> tuple[float, int]:
        """(the longest pause, the full collections) since the last call; starts a new window."""
        taken = (self.worst, self.full_collections)
        self.worst, self.full_collections = 0.0, 0
        return taken

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        # Called twice per collection, thousands of times a second in a busy process: the
        # process's CPU clock (a system call, 4% of a hollow process's samples when read for
        # every collection) is read only around the full ones.
        full = info.get("generation") == 2
        if phase == "start":
            self._began = self._clock()
            if full:
                self._began_cpu = time.process_time()
            return
        pause = self._clock() - self._began
        self.worst = max(self.worst, pause)
        if full:
            self.full_collections += 1
        if pause >= SLOW_COLLECTION:
            cpu = f"{(time.process_time() - self._began_cpu) * 1000:.0f} ms of CPU; " if full else ""
            log.warning(
                "garbage collection of generation %s held the loop %.0f ms (%s%s collected)",
                info.get("generation"),
                pause * 1000,
                cpu,
                info.get("collected"),
            )


class LoopLagReporter:
    """Logs the manager's loop lag: every ``period`` at debug, and at once as a warning when
    one stall was long enough to endanger Raft heartbeats (``warn_after``)."""

    def __init__(self, probe: LoopLagProbe, period: float = 10.0, warn_after: float = 0.5) -> None:
        self.probe = probe
        self.period = period
        self.warn_after = warn_after
        self.gc = GCPauses()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.probe.start()
        self.gc.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-report")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.gc.stop()
        await self.probe.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.report()

    def report(self) -> None:
        """Log the window that just ended and start the next."""
        worst = self.probe.take()
        gc_worst, full = self.gc.take()
        collector = f"; longest garbage-collector pause {gc_worst * 1000:.0f} ms, {full} full collection(s)"
        if worst >= self.warn_after:
            log.warning(
                "event loop blocked for up to %.0f ms in the last %.0f s%s",
                worst * 1000,
                self.period,
                collector,
            )
        else:
            log.debug(
                "event loop lag: worst %.1f ms in the last %.0f s%s", worst * 1000, self.period, collector
            )
