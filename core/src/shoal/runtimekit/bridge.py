"""Run an engine SDK's blocking calls off the event loop, in a way the caller can cancel.

Both engine SDKs are synchronous (requests over a Unix socket). We run each call in its own
daemon thread rather than in asyncio's default executor: that pool has only a handful of
workers, so fifty long ``wait`` calls would starve every ``create`` and ``start`` behind them,
and its threads are joined at interpreter exit. A daemon thread per call costs far less than
the HTTP round trip it wraps, and a call whose caller gave up cannot hold the process open.

Long calls still end on their own: ``wait`` polls with a bounded request timeout and log
streams are aborted by shutting their socket down (see ``abort_response``).

The threads are bounded all the same: at most ``MAX_THREADS`` calls per event loop run at
once, the others wait their turn without a thread. A thread whose caller gave up keeps its
place until it ends, so the bound counts every thread (and engine connection) really in use.
The agent bounds its engine operations far lower (``shoal.agent.enginegate``); this bound is
for the rest: a burst of ``wait`` set-ups after a restart re-adopting 10,000 containers, or
healthcheck polls.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Engine calls one event loop runs in threads at once.
MAX_THREADS = 64
_thread_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def post_to_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Schedule ``callback`` on ``loop`` from another thread; a closed loop means nobody waits."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


async def call(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in a fresh daemon thread and await its result.

    Cancelling the await abandons the thread; its result is then dropped.
    """
    loop = asyncio.get_running_loop()
    slots = _thread_slots.get(loop)
    if slots is None:
        slots = _thread_slots[loop] = asyncio.Semaphore(MAX_THREADS)
    await slots.acquire()  # cancelled while waiting here: no thread was started
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the awaiting coroutine
            post_to_loop(loop, settle, None, exc)
        else:
            post_to_loop(loop, settle, result, None)
        finally:
            post_to_loop(loop, slots.release)

    try:
        thread = threading.Thread(
            target=run, name=f"shoal-runtime-{getattr(fn, '__name__', 'call')}", daemon=True
        )
        thread.start()
    except BaseException:
        slots.release()
        raise
    return await future


def abort_response(response: Any) -> None:
    """Wake a thread blocked reading ``response`` (a streamed ``requests`` response).

    Closing a socket does not interrupt a ``recv`` already blocked on it in another thread;
    shutting it down does: the reader sees end-of-stream and returns.
    """
    raw = getattr(getattr(getattr(response.raw, "_fp", None), "fp", None), "raw", None)
    sock = getattr(raw, "_sock", raw)
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Pipe:
    """A bounded hand-off from one producer thread to one coroutine.

    The producer blocks when ``limit`` items are in flight (backpressure for fast log
    streams) but re-checks ``stopped`` twice a second, so a consumer that went away never
    leaves it stuck.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 1024) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._credits = threading.Semaphore(limit)
        self.stopped = threading.Event()

    def send(self, item: object) -> bool:
        """Called by the producer thread; False once the consumer has stopped."""
        while not self.stopped.is_set():
            if self._credits.acquire(timeout=0.5):
                post_to_loop(self._loop, self._queue.put_nowait, item)
                return True
        return False

    async def receive(self) -> object:
        item = await self._queue.get()
        self._credits.release()
        return item

    def stop(self) -> None:
        self.stopped.set()
