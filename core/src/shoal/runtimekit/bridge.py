"""Run an engine SDK's blocking calls off the event loop, in a way the caller can cancel.

Both engine SDKs are synchronous (requests over a Unix socket). We run each call in a daemon
thread of its own for as long as it runs, rather than in asyncio's default executor: that pool
has only a handful of workers, so fifty long ``wait`` calls would starve every ``create`` and
``start`` behind them, and its threads are joined at interpreter exit. A call whose caller gave
up cannot hold the process open.

The threads are kept once their call ends (``_Workers``) and take the next call, rather than
one thread started per call: ``Thread.start`` blocks the event loop until the new thread has
run (0.3 ms median, 1.4 ms p90, 3 ms p99 on two busy cores), and a create of four tasks makes
twelve engine calls, each on the way from one to the next. Handing a call to a waiting thread
is a queue put (7 us). A call finds a thread at once all the same: a new one is started when
none is waiting; one left waiting ``IDLE_SECONDS`` ends.

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
import functools
import logging
import queue
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("shoal.runtimekit")

#: Engine calls one event loop runs in threads at once.
MAX_THREADS = 64
#: How long a thread whose call ended waits for another before it ends.
IDLE_SECONDS = 60.0
#: The name of a thread waiting for a call (one running a call is named after it, ``shoal-runtime-``
#: and the call's name: the threads so named are the calls in progress).
IDLE_NAME = "shoal-bridge-idle"
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
    """Run ``fn(*args, **kwargs)`` in a daemon thread of its own while it runs (a kept one, or
    a new one) and await its result.

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

    def run() -> Callable[[], None]:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the awaiting coroutine
            return functools.partial(_deliver, loop, settle, slots, None, exc)
        return functools.partial(_deliver, loop, settle, slots, result, None)

    try:
        _workers.run(run, f"shoal-runtime-{getattr(fn, '__name__', 'call')}")
    except BaseException:
        slots.release()
        raise
    return await future


def _deliver(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[Any, BaseException | None], None],
    slots: asyncio.Semaphore,
    result: Any,
    error: BaseException | None,
) -> None:
    """Hand a call's outcome, then its place, back to the loop that made it."""
    post_to_loop(loop, settle, result, error)
    post_to_loop(loop, slots.release)


class _Workers:
    """Daemon threads that run calls and, once a call ends, wait ``IDLE_SECONDS`` for the next.

    ``_idle`` counts the threads waiting for a call less the calls queued for them: a call
    that finds it above 0 is queued for a waiting thread, else a thread is started for it. A
    thread that waited its time ends only while the count says nobody counts on it. A thread
    counts itself waiting before it hands its call's outcome back, so that the call its caller
    makes next (a start after a create) finds it."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Callable[[], None]], str]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def run(self, job: Callable[[], Callable[[], None]], name: str) -> None:
        """Run ``job`` (which raises nothing) in a thread named ``name`` while it runs, then
        what it returns (its outcome's delivery) once the thread is free for another."""
        with self._lock:
            waiting = self._idle > 0
            if waiting:
                self._idle -= 1
        if not waiting:  # started before the call is queued: if it cannot be, nothing is queued
            threading.Thread(target=self._work, name=name, daemon=True).start()
        self._calls.put((job, name))

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                job, name = self._calls.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # another waiting thread covers every queued call
                        self._idle -= 1
                        return
                continue  # a call was queued for this thread meanwhile: take it
            me.name = name
            try:
                deliver = job()
            except BaseException:  # ``call``'s jobs catch everything: a bug, yet the thread stays
                log.exception("engine call thread: a call raised")
                deliver = None
            me.name = IDLE_NAME
            with self._lock:
                self._idle += 1
            if deliver is not None:
                deliver()


_workers = _Workers()


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
