"""``ExitWatch``: one event stream wakes the waits of dying containers (issue 13, defect 3).

A fake engine stream: each subscription is a queue the test feeds names into; ``None`` ends
the stream as an engine restart would.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator

import pytest
from shoal.roles.runtime import RuntimeError_
from shoal.runtimekit import exits
from shoal.runtimekit.exits import ExitWatch, Subscription
from shoal.testing.runtime import eventually


class FakeStreams:
    def __init__(self) -> None:
        self.opened: list[queue.Queue[str | None]] = []
        self.refuse = False

    def subscribe(self) -> Subscription:
        if self.refuse:
            raise ConnectionRefusedError("no engine")
        feed: queue.Queue[str | None] = queue.Queue()
        self.opened.append(feed)

        def names() -> Iterator[str]:
            while (name := feed.get()) is not None:
                yield name

        return names(), lambda: feed.put(None)


async def test_a_death_wakes_only_that_containers_waiter() -> None:
    streams = FakeStreams()
    watch = ExitWatch(streams.subscribe, "fake")
    async with watch.watching("web.1") as web1, watch.watching("web.2") as web2:
        web1.clear()  # the stream opened: both were told to look once
        web2.clear()
        streams.opened[0].put("web.2")
        await asyncio.wait_for(web2.wait(), 5)
        assert not web1.is_set()
    watch.close()
    assert len(streams.opened) == 1


async def test_a_broken_stream_is_reopened_and_every_waiter_looks_again() -> None:
    streams = FakeStreams()
    watch = ExitWatch(streams.subscribe, "fake")
    async with watch.watching("web.1") as web1:
        web1.clear()
        streams.opened[0].put(None)  # the engine restarted: deaths meanwhile go unseen
        await asyncio.wait_for(web1.wait(), 5)

        async def reopened() -> bool:
            return watch.subscriptions == 2

        await eventually(reopened, "the stream reopened", deadline=5)
    watch.close()


async def test_a_wait_on_an_engine_that_sends_no_events_is_a_temporary_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exits, "OPEN_TIMEOUT", 0.2)
    streams = FakeStreams()
    streams.refuse = True
    watch = ExitWatch(streams.subscribe, "unix:///nowhere.sock")
    with pytest.raises(RuntimeError_, match=r"nowhere\.sock sends no events") as caught:
        async with watch.watching("web.1"):
            pass
    assert caught.value.temporary
    watch.close()
