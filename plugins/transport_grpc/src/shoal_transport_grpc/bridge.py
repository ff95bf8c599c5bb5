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

A handler whose loop has closed (the process is stopping) is answered UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from shoal.plugin import RPCError, StatusCode

_T = TypeVar("_T")

_STOPPING = "server is stopping"


def _submit(coro: Coroutine[Any, Any, _T], home: asyncio.AbstractEventLoop) -> concurrent.futures.Future[_T]:
    try:
        return asyncio.run_coroutine_threadsafe(coro, home)
    except RuntimeError:  # the handlers' loop is closed
        coro.close()
        raise RPCError(StatusCode.UNAVAILABLE, _STOPPING) from None


async def call_unary(handler: Callable[[], Awaitable[bytes]], home: asyncio.AbstractEventLoop) -> bytes:
    """``await handler()`` on ``home``; cancelling the caller cancels it there."""

    async def run() -> bytes:
        return await handler()

    return await asyncio.wrap_future(_submit(run(), home))


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

    def deliver(item: _Message) -> None:
        serving.call_soon_threadsafe(inbox.put_nowait, item)  # RuntimeError once serving closed

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

    driver = _submit(drive(), home)
    try:
        while True:
            item = await inbox.get()
            if item.error is not None:
                raise item.error
            if item.data is None:
                return
            yield item.data
            try:
                home.call_soon_threadsafe(demand.put_nowait, None)
            except RuntimeError:
                raise RPCError(StatusCode.UNAVAILABLE, _STOPPING) from None
    finally:
        driver.cancel()
