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
    """At most one batch per ``interval``; none is held back when the last was long enough ago."""

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._last = float("-inf")

    async def pace(self) -> None:
        """Wait until a batch may go, then count it as gone.

        Even when none is held back this yields once, so the events queued by the same burst
        of callbacks (one store commit's watch events, the status updates of one gather) join
        the batch.
        """
        delay = self._last + self.interval - self._clock()
        await self._sleep(delay if delay > 0 else 0)
        self._last = self._clock()
