"""Leading-edge batching: the first event after a quiet spell goes at once, a burst is batched.

The batching loops of the manager and the agent (scheduler ticks, assignment messages, task
status reports and their store commits) used to sleep a fixed interval after every wakeup, so
even one task on an idle cluster paid each interval in turn (about 0.25 s from ``service
create`` to Running, above the engine's own time). With a pacer the loop still runs at most
once per interval, so a burst of a thousand events still becomes a few batches, but an event
that arrives after a quiet spell is handled straight away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Pacer:
    """At most one batch per ``interval`` on average; none is held back when the last ones
    were long enough ago.

    A token bucket: a batch takes a token, tokens come back one per ``interval``, at most
    ``burst`` of them. With ``burst`` 1 (the default) batches are at least ``interval`` apart.
    A larger ``burst`` lets that many batches go at once after a quiet spell before the
    spacing applies: the few status updates of a small service each go when they happen
    (on a quiet node the last one no longer waits out the interval of the one before),
    while a sustained stream is still one batch per ``interval``.
    """

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        burst: int = 1,
    ) -> None:
        if burst < 1:
            raise ValueError(f"a pacer's burst must be at least 1, got {burst}")
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp: float | None = None

    def _refill(self) -> None:
        now = self._clock()
        if self._stamp is not None:
            gained = (now - self._stamp) / self.interval if self.interval > 0 else float(self.burst)
            self._tokens = min(float(self.burst), self._tokens + gained)
        self._stamp = now

    async def pace(self) -> None:
        """Wait until a batch may go, then count it as gone.

        Even when none is held back this yields once, so the events queued by the same burst
        of callbacks (one store commit's watch events, the status updates of one gather) join
        the batch.
        """
        self._refill()
        if self._tokens >= 1:
            await self._sleep(0)
        else:
            await self._sleep((1 - self._tokens) * self.interval)
            self._refill()
            self._tokens = max(self._tokens, 1.0)  # a sleep that ended a hair early still counts
        self._tokens -= 1
