"""Session opens that reach a follower during an election wait there for its result.

When the leader dies, every agent opens its session with another manager. A follower that
knows no leader yet (an election is under way), or still names the dead one (it has not timed
out on it yet), used to answer at once: "unavailable", or "go to the leader" pointing back at the
dead manager. Each such answer doubled the agent's backoff, so by the time the election was over
the agents waited seconds more before asking again. Instead the follower holds the open until it
knows a leader other than the one the agent lost (``SessionRequest.lost_leader``), then sends
the agent there at once. One poller serves every waiting open, so a thousand of them cost one
timer, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

#: How long a follower holds a session open for an election: longer than an election takes at
#: the swarm's raft timing (1-2 s election timeout), shorter than the agent's 5 s wait for its
#: first session message.
SESSION_LEADER_WAIT = 3.0
#: How often the poller looks at who leads, while opens are waiting.
POLL_INTERVAL = 0.05


class LeaderWait:
    """Waits, shared by every caller, for a leader other than the one an agent lost."""

    def __init__(
        self,
        leader_addr: Callable[[], str],
        *,
        longest: float | None = None,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.leader_addr = leader_addr
        #: The longest an open waits (then it gets whatever is known: after that long a
        #: follower that still names the lost leader has heard from it, so it is alive).
        self.longest = SESSION_LEADER_WAIT if longest is None else longest
        self.interval = interval
        self._waiters = 0
        self._changed: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None

    async def leader_other_than(self, lost: str) -> str:
        """The leader's address once one is known that is not ``lost`` (``lost`` empty: any);
        after ``longest`` seconds, whatever is known then ("" for none)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.longest
        self._waiters += 1
        try:
            while True:
                current = self.leader_addr()
                if current and current != lost:
                    return current
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return current
                changed = self._watch()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await changed.wait()
        finally:
            self._waiters -= 1

    def _watch(self) -> asyncio.Event:
        """The event set at the next change of leader (the poller runs while anyone waits)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="session-leader-wait")
        return self._changed

    async def _poll(self) -> None:
        last = self.leader_addr()
        while self._waiters:
            await asyncio.sleep(self.interval)
            current = self.leader_addr()
            if current != last and self._changed is not None:
                last = current
                self._changed.set()
                self._changed = asyncio.Event()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
