"""Session opens held by a follower during an election (issue 18): each gets the new leader as
soon as one is known, a thousand of them share one poller, and none waits past its limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shoal.daemon.leaderwait import LeaderWait

WAITERS = 1000


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110  (nothing signals these conditions)
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), 10)


async def test_waiting_opens_get_the_new_leader_and_share_one_poller() -> None:
    leader = ["dead:2377"]
    looks = 0

    def leader_addr() -> str:
        nonlocal looks
        looks += 1
        return leader[0]

    wait = LeaderWait(leader_addr, longest=10.0, interval=0.01)
    waiters = [asyncio.ensure_future(wait.leader_other_than("dead:2377")) for _ in range(WAITERS)]
    await until(lambda: wait._waiters == WAITERS)
    parked = looks
    await until(lambda: looks >= parked + 3)  # three rounds of the poller
    assert looks - parked < 100, f"{looks - parked} looks for three rounds: one poller, not one per open"
    assert not any(w.done() for w in waiters)
    leader[0] = "new:2377"
    assert set(await asyncio.wait_for(asyncio.gather(*waiters), 5)) == {"new:2377"}
    await wait.close()


async def test_an_open_waits_no_longer_than_its_limit_and_a_known_leader_costs_no_wait() -> None:
    wait = LeaderWait(lambda: "old:2377", longest=0.2, interval=0.01)
    assert await asyncio.wait_for(wait.leader_other_than("old:2377"), 5) == "old:2377"
    assert await asyncio.wait_for(wait.leader_other_than(""), 0.05) == "old:2377"
    await wait.close()
