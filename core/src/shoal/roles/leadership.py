"""``LeadershipFeed``: the ``leadership()`` stream of a store provider, written once.

``StoreProvider.leadership`` has rules every store must get exactly right, because the kernel
runs the leader-only components (dispatcher, scheduler, reaper) exactly while it says True:
subscribe when called (not at the first iteration, or a change in between is lost), yield the
current value at once, then only real changes, end when the store stops, and raise
``MemberRemoved`` once the group no longer counts this member, also for a subscriber that
comes after. The replicated stores (raft, etcd) had the same twenty lines for it; a store
plugin now keeps one feed, tells it what happens (``changed``, ``member_removed``, ``close``)
and returns ``feed.subscribe(...)`` from ``leadership()``. It holds no store logic: how a
store finds out it leads, or was removed, stays the store's business.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from shoal.roles.store import MemberRemoved

#: What a subscriber's queue carries: a leadership change, the reason this member was removed,
#: or None when the store stopped.
_Event = bool | str | None


class LeadershipFeed:
    """Every ``leadership()`` iterator of one store provider, fed with its changes."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[_Event]] = set()
        self._removed = ""
        self._closed = False

    @property
    def removed(self) -> str:
        """Why this member is no longer one of the group ("" while it is)."""
        return self._removed

    def subscribe(self, current: Callable[[], bool]) -> AsyncIterator[bool]:
        """What the provider's ``leadership()`` returns: subscribed now, it yields
        ``current()`` (read when iteration starts) and then each change, ends after ``close``
        and raises ``MemberRemoved`` after ``member_removed``."""
        queue: asyncio.Queue[_Event] = asyncio.Queue()
        self._subscribers.add(queue)
        if self._removed:
            queue.put_nowait(self._removed)
        return self._follow(queue, current)

    async def _follow(self, queue: asyncio.Queue[_Event], current: Callable[[], bool]) -> AsyncIterator[bool]:
        try:
            last = current()
            yield last
            while not self._closed or not queue.empty():
                event = await queue.get()
                if event is None:
                    return
                if isinstance(event, str):
                    raise MemberRemoved(event)
                if event != last:
                    last = event
                    yield event
        finally:
            self._subscribers.discard(queue)

    def changed(self, leader: bool) -> None:
        """This member now leads (True) or may not any more (False); repeats are dropped."""
        self._publish(leader)

    def member_removed(self, reason: str) -> None:
        """The group no longer counts this member, for ``reason`` (one line, shown to the
        operator): every subscriber, present and future, raises ``MemberRemoved(reason)``.
        Only the first reason is kept."""
        if self._removed:
            return
        self._removed = reason
        self._publish(reason)

    def close(self) -> None:
        """The store stopped: every iterator ends once it has taken what was fed before."""
        self._closed = True
        self._publish(None)

    def _publish(self, event: _Event) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)
