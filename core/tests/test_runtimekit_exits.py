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
from shoal.testing.cancelling import cancel_after_turns
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


async def _opened(streams: FakeStreams, watch: ExitWatch) -> None:
    """Open the watch's stream (the first wait does) and let its first look go."""
    async with watch.watching("other") as other:
        other.clear()


async def test_a_start_hands_its_look_and_its_waiter_to_the_wait_and_a_death_between_is_seen() -> None:
    """The wait after a start takes what the start saw (no second look at the container), and a
    death after that look, before the wait began, still wakes the wait."""
    streams = FakeStreams()
    watch = ExitWatch(streams.subscribe, "fake")
    await _opened(streams, watch)
    with watch.ahead("web.1") as keep:
        keep({"running": True})
    streams.opened[0].put("web.1")  # dies before its wait begins
    handed = watch.handed("web.1")
    assert handed is not None and handed[1] == {"running": True}
    assert watch.handed("web.1") is None  # taken once
    async with watch.watching("web.1", handed[0]) as died:
        await asyncio.wait_for(died.wait(), 5)
    assert not watch._waiters  # nothing left registered
    watch.close()


async def test_nothing_is_handed_over_when_the_stream_is_closed_the_start_failed_or_was_forgotten() -> None:
    streams = FakeStreams()
    watch = ExitWatch(streams.subscribe, "fake")
    with watch.ahead("web.1") as keep:  # the stream is not open yet: the wait looks itself
        keep({"running": True})
    assert watch.handed("web.1") is None
    await _opened(streams, watch)
    with pytest.raises(RuntimeError_), watch.ahead("web.2"):
        raise RuntimeError_("start failed")
    assert watch.handed("web.2") is None
    with watch.ahead("web.3") as keep:
        keep({"running": True})
    watch.forget("web.3")  # removed without a wait
    assert watch.handed("web.3") is None
    with watch.ahead("web.4") as keep:
        keep({"first": True})
    with watch.ahead("web.4") as keep:  # started again: the first start's look is gone
        keep({"second": True})
    handed = watch.handed("web.4")
    assert handed is not None and handed[1] == {"second": True}
    watch.forget("web.4")
    assert set(watch._waiters) == {"web.4"}  # the handed waiter, until its wait ends
    async with watch.watching("web.4", handed[0]):
        pass
    assert not watch._waiters
    watch.close()


@pytest.mark.parametrize("turns", range(6))
async def test_a_wait_cancelled_as_it_enters_ends_cancelled_whatever_the_loop_turn(turns: int) -> None:
    """A task's wait is cancelled when the task is told to stop (the controller then awaits
    it before it stops the container). Cancelled within the loop turns in which it entered
    ``watching`` on an open stream, it used to go on: ``asyncio.wait_for`` on Python 3.11
    returns the result when its inner wait is done as the cancellation arrives, the wait then
    slept on a container that nobody would stop, and the task's container was left behind
    after ``service rm`` (tests/security/test_engine_overload.py, once in CI)."""
    streams = FakeStreams()
    watch = ExitWatch(streams.subscribe, "fake")
    await _opened(streams, watch)

    async def wait() -> None:
        async with watch.watching("web.1") as died:
            await died.wait()  # the container runs on: only a cancellation ends this

    waiting = asyncio.create_task(wait())
    done = await cancel_after_turns(waiting, turns)
    assert done, f"the wait cancelled after {turns} loop turns went on waiting"
    assert waiting.cancelled()
    assert not watch._waiters
    watch.close()
