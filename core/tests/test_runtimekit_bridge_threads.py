"""Engine calls run in threads that are kept for the next call (``shoal.runtimekit.bridge``):
starting a thread per call blocked the event loop until the new thread ran (up to 3 ms on two
busy cores), twelve times for a create of four tasks (issue 18 item 4)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from shoal.runtimekit import bridge as _bridge
from shoal.testing.runtime import eventually


def _current() -> tuple[int, str]:
    return threading.get_ident(), threading.current_thread().name


def _idle_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == _bridge.IDLE_NAME]


async def test_a_call_after_another_runs_in_the_same_thread_named_after_it() -> None:
    first_ident, first_name = await _bridge.call(_current)
    second_ident, second_name = await _bridge.call(_current)
    assert first_ident == second_ident != threading.get_ident()
    assert first_name == second_name == "shoal-runtime-_current"
    assert any(t.ident == first_ident for t in _idle_threads())  # waiting for the next call


async def test_calls_at_once_each_get_a_thread_whatever_is_waiting() -> None:
    await _bridge.call(_current)  # one thread waits now
    release = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def engine_call() -> int:
        with lock:
            started.append(threading.get_ident())
        release.wait(30)
        return threading.get_ident()

    calls = [asyncio.ensure_future(_bridge.call(engine_call)) for _ in range(5)]

    async def all_started() -> bool:
        return len(started) == 5

    await eventually(all_started, "five calls running at once")
    release.set()
    assert len(set(await asyncio.wait_for(asyncio.gather(*calls), 10))) == 5


async def test_a_thread_left_waiting_ends_and_a_later_call_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_bridge, "IDLE_SECONDS", 0.05)
    workers = _bridge._Workers()
    monkeypatch.setattr(_bridge, "_workers", workers)
    first, _ = await _bridge.call(_current)

    async def ended() -> bool:
        return not any(t.ident == first and t.is_alive() for t in threading.enumerate())

    await eventually(ended, "the waiting thread to end")
    assert workers._idle == 0
    assert (await _bridge.call(_current))[1] == "shoal-runtime-_current"


async def test_a_call_that_raises_past_call_leaves_its_thread_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workers = _bridge._Workers()
    monkeypatch.setattr(_bridge, "_workers", workers)
    ran = threading.Event()

    def broken() -> None:  # what ``call``'s own jobs never do
        ran.set()
        raise RuntimeError("a bug")

    workers.run(broken, "shoal-runtime-broken")
    assert await asyncio.to_thread(ran.wait, 10)

    async def waiting_again() -> bool:
        return workers._idle == 1

    await eventually(waiting_again, "the thread to wait for the next call")
    assert await asyncio.wait_for(_bridge.call(lambda: 42), 10) == 42
