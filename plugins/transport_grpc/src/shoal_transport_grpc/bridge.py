"""Running a kernel handler on its own loop for a call the serving loop took in.

The server's gRPC side lives on a ``ServingLoop`` (see ``servingloop``); the kernel's handlers
belong to the loop that called ``serve`` (their locks, queues and store are that loop's), so
each call hops there and back:

- a unary handler runs as a task on its loop; the call's cancellation (deadline, client gone,
  server stop) cancels that task, and its result or exception comes back to the call;
- a stream handler's async iterator is driven by one task on its loop that sends each message
  across and pulls the next only once the previous was written (the same back-pressure as
  when gRPC iterated it itself). Cancelling the call cancels that task, which closes the
  iterator on its own loop (its ``finally`` blocks run there).

A hop is a callable posted to the other loop's ``Mailbox``: the calls crossing at about the
same time share one wake-up of that loop (``call_soon_threadsafe`` writes to the loop's
self-pipe at every call; ``run_coroutine_threadsafe`` and ``wrap_future`` added a
``concurrent.futures.Future`` with its lock on top: ~100 us of CPU per call more, measured).

A handler whose loop has closed (the process is stopping) is answered UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from shoal.plugin import RPCError, StatusCode

_STOPPING = "server is stopping"


class Mailbox:
    """Runs callables on one loop, posted from any thread; one wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._posted: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = collections.deque()
        self._armed = False

    def post(self, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` on the loop soon; ``RuntimeError`` if the loop is closed."""
        with self._lock:
            self._posted.append((function, args))
            if self._armed:
                return
            self._armed = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            with self._lock:
                self._posted.clear()
                self._armed = False
            raise

    def _drain(self) -> None:
        with self._lock:
            posted, self._posted = self._posted, collections.deque()
            self._armed = False
        for function, args in posted:
            try:
                function(*args)
            except Exception as exc:  # one broken callable must not drop the others
                self._loop.call_exception_handler({"message": "bridge callback failed", "exception": exc})


_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Mailbox] = weakref.WeakKeyDictionary()
_mailboxes_lock = threading.Lock()


def mailbox(loop: asyncio.AbstractEventLoop) -> Mailbox:
    """The one ``Mailbox`` of ``loop`` (so concurrent calls share its wake-ups)."""
    with _mailboxes_lock:
        box = _mailboxes.get(loop)
        if box is None:
            box = _mailboxes[loop] = Mailbox(loop)
        return box


def _post_home(home: asyncio.AbstractEventLoop, function: Callable[..., None], *args: Any) -> None:
    try:
        mailbox(home).post(function, *args)
    except RuntimeError:  # the handlers' loop is closed
        raise RPCError(StatusCode.UNAVAILABLE, _STOPPING) from None


def _post_quietly(loop: asyncio.AbstractEventLoop, function: Callable[..., None], *args: Any) -> None:
    """Post unless ``loop`` is closed (then nobody waits for it any more)."""
    try:
        mailbox(loop).post(function, *args)
    except RuntimeError:
        pass


async def call_unary(handler: Callable[[], Awaitable[bytes]], home: asyncio.AbstractEventLoop) -> bytes:
    """``await handler()`` on ``home``; cancelling the caller cancels it there."""
    serving = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = serving.create_future()
    started: list[asyncio.Task[bytes]] = []

    async def run() -> bytes:
        return await handler()

    def deliver(task: asyncio.Task[bytes]) -> None:  # on the serving loop
        if answer.done():
            return
        if task.cancelled():
            answer.cancel()
            return
        error = task.exception()
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(task.result())

    def start() -> None:  # on home
        task = home.create_task(run())
        task.add_done_callback(lambda done: _post_quietly(serving, deliver, done))
        started.append(task)

    def cancel() -> None:  # on home, always after start (one mailbox, in order)
        for task in started:
            task.cancel()

    _post_home(home, start)
    try:
        return await answer
    except asyncio.CancelledError:
        _post_quietly(home, cancel)
        raise


class _Message:
    """One item crossing from the handler's loop: a message, the end, or the handler's error."""

    __slots__ = ("data", "error")

    def __init__(self, data: bytes | None = None, error: BaseException | None = None) -> None:
        self.data = data
        self.error = error


async def call_stream(
    handler: Callable[[], AsyncIterator[bytes]], home: asyncio.AbstractEventLoop
) -> AsyncIterator[bytes]:
    """Yield ``handler()``'s messages, iterated on ``home``, one written before the next pulled."""
    serving = asyncio.get_running_loop()
    inbox: asyncio.Queue[_Message] = asyncio.Queue()  # serving side
    demand: asyncio.Queue[None] = asyncio.Queue()  # handler side (binds its loop on first wait)
    started: list[asyncio.Task[None]] = []

    def deliver(item: _Message) -> None:  # on home; raises RuntimeError once serving closed
        mailbox(serving).post(inbox.put_nowait, item)

    async def drive() -> None:
        messages = handler()
        try:
            async for data in messages:
                deliver(_Message(data))
                await demand.get()
            deliver(_Message())
        except Exception as exc:
            deliver(_Message(error=exc))
        finally:
            close = getattr(messages, "aclose", None)
            if close is not None:
                await close()

    def start() -> None:  # on home
        started.append(home.create_task(drive()))

    def cancel() -> None:  # on home, always after start
        for task in started:
            task.cancel()

    _post_home(home, start)
    try:
        while True:
            item = await inbox.get()
            if item.error is not None:
                raise item.error
            if item.data is None:
                return
            yield item.data
            _post_home(home, demand.put_nowait, None)
    finally:
        _post_quietly(home, cancel)
