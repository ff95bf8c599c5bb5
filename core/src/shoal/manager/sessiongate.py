"""Admission of session opens: the leader registers a bounded number of nodes at once and
tells the others when to come back.

After a leader change every agent reopens its session within a fraction of a second, and each
open is a registration (the node written to the store, its first session message built).
Served all at once, a thousand of them queued on the new leader's event loop beyond the
agents' 5 s timeout; the agents retried, and the herd never ended. Swarm bounds registrations
per node (3 in 8 s); the dispatcher bounds them in total: at most ``limit`` at once, and an
open beyond that is answered at once with a retry-after.

The retry-afters form a virtual queue: each turned-away open is given the next free place,
one place per ``cost / limit`` seconds (``cost``: how long a registration has been taking,
waiting on the loop included), so the returns arrive at the rate registrations complete and not
all together; jitter on top keeps them out of step. No place is further than
``max_delay``, so a turned-away node comes back well before it could be marked Down.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

#: Registrations served at once; more are turned away with a retry-after.
DEFAULT_LIMIT = 64
#: The shortest retry-after: a turned-away agent never comes straight back.
MIN_DELAY = 0.2
#: A registration's cost assumed before one was measured, and the bounds of the estimate.
INITIAL_COST = 0.05
MIN_COST, MAX_COST = 0.001, 2.0
#: Weight of the newest registration in the cost estimate (an exponential average).
COST_WEIGHT = 0.2
#: Up to this fraction of a delay is added at random, so returns are not in step.
JITTER = 0.25


class RegistrationGate:
    """How many registrations are in flight, and when a turned-away open should return."""

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        *,
        max_delay: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.limit = max(1, limit)
        #: The longest retry-after (the dispatcher gives one heartbeat period).
        self.max_delay = max_delay
        self.clock = clock
        self.rng = rng
        self.in_flight = 0
        #: Opens admitted and turned away since the start (the bench and tests read them).
        self.served = 0
        self.turned_away = 0
        #: The most registrations ever in flight at once.
        self.peak = 0
        self.cost = INITIAL_COST
        self._next_place = 0.0

    def enter(self) -> bool:
        """Take a registration slot; False when all are taken (turn the open away)."""
        if self.in_flight >= self.limit:
            self.turned_away += 1
            return False
        self.in_flight += 1
        self.served += 1
        self.peak = max(self.peak, self.in_flight)
        return True

    def leave(self, seconds: float) -> None:
        """Give the slot back; ``seconds`` is how long this registration took."""
        self.in_flight = max(0, self.in_flight - 1)
        seconds = min(max(seconds, MIN_COST), MAX_COST)
        self.cost += COST_WEIGHT * (seconds - self.cost)

    def retry_after(self) -> float:
        """Seconds until a turned-away open should come back: its place in the virtual queue,
        with jitter, at most ``max_delay``."""
        now = self.clock()
        longest = max(MIN_DELAY, self.max_delay())
        place = min(max(now + MIN_DELAY, self._next_place), now + longest)
        self._next_place = place + self.cost / self.limit
        delay = place - now
        return min(longest, delay * (1 + JITTER * self.rng()))
