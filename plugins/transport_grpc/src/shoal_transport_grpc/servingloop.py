"""A thread with an event loop of its own, on which a gRPC server takes its calls in.

Why: ``grpc.aio``'s server accepts calls one at a time per method. Its main loop keeps one
``request_call`` outstanding per registered method (``intake``) and, for each call C-core
hands over, needs several turns of the event loop before it asks for the next one (the completion-queue reader completes a future,
the ``_request_call`` task resumes, ``asyncio.wait`` wakes the main loop task, which creates
the call's task and a new ``request_call`` task, whose first step posts the request). Every
turn waits behind everything else ready in that iteration, so on a manager's loop running
1 ms of callbacks per iteration the server took in ~140 calls a second (docs/benchmarks.md,
"The cause of the late calls"); registering each method, or keeping many requests
outstanding, leaves it at ~4 turns per call over all methods ("A manager's gRPC intake"). On a loop that does nothing else those turns take
microseconds, whatever the manager's loop is doing. The handlers still run on the caller's
loop: every call of a registered method is handed there whole once taken in (``handoff``),
the others cross there and back (``bridge``).

The serving thread needs the GIL for each turn of its loop, and CPython makes a thread that
runs Python without pause hand the GIL over only every ``sys.getswitchinterval()`` (5 ms by
default): behind a daemon loop busy with Python, the serving loop got about one turn per 5 ms,
and a call needs several. So starting a serving loop shortens the process's switch interval
to ``SWITCH_INTERVAL`` (never lengthens it): more handovers between threads that both want
the GIL, none when only one does.

``stop`` ends the loop and joins the thread: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

#: The longest a thread running Python keeps the GIL from the serving thread (seconds).
SWITCH_INTERVAL = 0.001
#: How long ``stop`` waits for the thread once its loop has been told to end.
_JOIN_SECONDS = 10.0


class ServingLoop:
    """An event loop running on its own daemon thread until ``stop``."""

    def __init__(self, name: str) -> None:
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        started: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()
        self._done: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(started,), name=name, daemon=True)
        self._thread.start()
        self.loop = started.result()

    def _run(self, started: concurrent.futures.Future[asyncio.AbstractEventLoop]) -> None:
        async def main() -> None:
            self._done = asyncio.Event()
            started.set_result(asyncio.get_running_loop())
            await self._done.wait()

        # asyncio.run cancels what is left, finalises async generators and closes the loop.
        asyncio.run(main())

    async def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on this loop and wait for it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        """End the loop (tasks still on it are cancelled) and join the thread."""
        if self._thread.is_alive():
            done = self._done
            if done is not None:
                try:
                    self.loop.call_soon_threadsafe(done.set)
                except RuntimeError:  # the loop already closed
                    pass
            self._thread.join(_JOIN_SECONDS)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
