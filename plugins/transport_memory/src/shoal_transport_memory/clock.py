"""An event loop with virtual time, so simulated delays and deadlines cost no wall-clock time.

With real time a simulation is only as reproducible as the machine's timing: two timers due a
microsecond apart can run in either order depending on when the loop wakes. On this loop
``time()`` is a counter that jumps straight to the next timer whenever nothing is ready, so
``asyncio.sleep``, deadlines and the network's delays all follow the schedule exactly, and a
run of hours of simulated time takes as long as its computation. Real I/O (the loop's own
wake-up pipe, threads via ``run_in_executor``) still works; while a thread is busy virtual time
may run ahead of it, so simulations should stay on the loop.

Use it as ``asyncio.Runner(loop_factory=VirtualTimeLoop)`` or ``VirtualTimeLoop().run_until_complete``.
"""

from __future__ import annotations

import asyncio
import selectors


class _SkippingSelector(selectors.DefaultSelector):
    """Polls real I/O without blocking; instead of waiting for a timer, advances the clock to it."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # no timer at all: only real I/O can wake us
            return super().select(None)
        self._loop.advance(timeout)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``asyncio`` loop whose clock only moves when every task is waiting for a timer."""

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        super().__init__(selector=_SkippingSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does this itself when it would otherwise sleep)."""
        if seconds < 0:
            raise ValueError(f"virtual clock cannot go back ({seconds}s)")
        self._virtual_now += seconds
