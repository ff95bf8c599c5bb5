"""``shoal.plugin.LeadershipFeed`` keeps the rules of ``StoreProvider.leadership()`` that the
raft and etcd stores share (the store conformance suite checks them through each store)."""

from __future__ import annotations

import asyncio

import pytest
from shoal.plugin import LeadershipFeed, MemberRemoved


async def test_yields_the_current_value_then_only_changes_and_ends_when_closed() -> None:
    feed, leader = LeadershipFeed(), [False]

    def change(to: bool) -> None:
        leader[0] = to
        feed.changed(to)

    stream = feed.subscribe(lambda: leader[0])
    change(True)  # before the first value is taken: read as the first value, not yielded twice
    assert await anext(stream) is True
    feed.changed(True)  # a repeat
    change(False)
    change(True)
    feed.close()
    assert [value async for value in stream] == [False, True]


async def test_a_change_between_subscribe_and_the_first_value_is_not_lost() -> None:
    feed, leader = LeadershipFeed(), [False]
    stream = feed.subscribe(lambda: leader[0])
    leader[0] = True
    feed.changed(True)
    leader[0] = False  # lost again before the first value is taken: the reader sees both turns
    feed.changed(False)
    feed.close()
    assert [value async for value in stream] == [False, True, False]


async def test_a_subscriber_after_close_gets_the_current_value_and_ends() -> None:
    feed = LeadershipFeed()
    feed.close()
    assert [value async for value in feed.subscribe(lambda: False)] == [False]


async def test_removal_reaches_waiting_and_later_subscribers_with_the_first_reason() -> None:
    feed = LeadershipFeed()
    waiting = feed.subscribe(lambda: True)
    assert await anext(waiting) is True
    pending = asyncio.ensure_future(anext(waiting))
    await asyncio.sleep(0)  # let it wait on the feed
    feed.member_removed("removed from the group")
    feed.member_removed("a later reason")
    with pytest.raises(MemberRemoved, match=r"^removed from the group$"):
        await pending
    assert feed.removed == "removed from the group"
    later = feed.subscribe(lambda: False)
    assert await anext(later) is False
    with pytest.raises(MemberRemoved, match=r"^removed from the group$"):
        await anext(later)


async def test_an_abandoned_iterator_unsubscribes() -> None:
    feed = LeadershipFeed()
    stream = feed.subscribe(lambda: False)
    assert await anext(stream) is False
    await stream.aclose()  # type: ignore[attr-defined]
    assert not feed._subscribers
