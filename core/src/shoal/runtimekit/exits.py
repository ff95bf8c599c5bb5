"""Learn that containers died from ONE engine event stream, instead of one call per container.

A runtime's ``wait`` used to hold one long-polling engine request (and one thread) per running
container, for as long as it ran: 10,000 replicas on a node meant 10,000 threads in the daemon
and 10,000 connections open to the engine, which is how dockerd ran out of file descriptors.
``ExitWatch`` reads the engine's event stream in one thread and wakes the ``wait`` calls of the
containers that die; a ``wait`` then asks the engine once for the exit status.

The engine-specific part is ``subscribe``: it opens the stream (the engine must have
subscribed by the time it returns) and gives the names of the containers that died, plus a
function that closes the stream from another thread.

No death is missed: a waiter registers before it looks at its container, and looks only once
the stream is open, so a container that dies after the look is reported by the stream. When
the stream breaks (the engine restarted), it is reopened with backoff and every waiter is
woken to look again, since deaths in between were not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from shoal.roles.runtime import RuntimeError_
from shoal.runtimekit.bridge import post_to_loop

log = logging.getLogger("shoal.runtime")

#: ``subscribe`` result: the names of containers as they die, and how to close the stream.
Subscription = tuple[Iterator[str], Callable[[], None]]

#: How long a ``wait`` waits for the event stream to open before it reports the engine
#: unreachable (a temporary error: the agent retries).
OPEN_TIMEOUT = 30.0
RETRY_MIN = 0.1
RETRY_MAX = 5.0


class ExitWatch:
    """Wakes the waiters of dying containers, for one runtime on one event loop."""

    def __init__(self, subscribe: Callable[[], Subscription], endpoint: str) -> None:
        self._subscribe = subscribe
        self._endpoint = endpoint
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._open = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        self._close_stream: Callable[[], None] | None = None
        self.subscriptions = 0  # how many times the stream was opened (for tests)

    @contextlib.asynccontextmanager
    async def watching(self, name: str) -> AsyncIterator[asyncio.Event]:
        """Within this block, the event is set when container ``name`` may have died.

        Entered only once the stream is open: look at the container after entering, and
        ``wait()`` on the event (then ``clear()`` it) while it runs.
        """
        self._start()
        died = asyncio.Event()
        self._waiters.setdefault(name, set()).add(died)
        try:
            try:
                await asyncio.wait_for(self._open.wait(), OPEN_TIMEOUT)
            except TimeoutError:
                raise RuntimeError_(
                    f"engine at {self._endpoint} sends no events (is it running?)", temporary=True
                ) from None
            yield died
        finally:
            waiters = self._waiters.get(name)
            if waiters is not None:
                waiters.discard(died)
                if not waiters:
                    del self._waiters[name]

    def _start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._pump, name="shoal-runtime-events", daemon=True).start()

    def _pump(self) -> None:
        """The reader thread: (re)open the stream and hand each death to the loop."""
        assert self._loop is not None
        loop, retry = self._loop, RETRY_MIN
        while not self._closing.is_set():
            try:
                names, self._close_stream = self._subscribe()
            except Exception as exc:  # engine down or restarting: try again
                log.debug("engine events at %s: %s", self._endpoint, exc)
                self._closing.wait(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            if self._closing.is_set():  # closed while it was opening
                self._close_stream()
                return
            retry = RETRY_MIN
            post_to_loop(loop, self._opened)
            try:
                for name in names:
                    post_to_loop(loop, self._died, name)
            except Exception as exc:
                log.debug("engine events at %s ended: %s", self._endpoint, exc)
            post_to_loop(loop, self._open.clear)

    def _opened(self) -> None:
        self.subscriptions += 1
        self._open.set()
        for waiters in self._waiters.values():  # deaths while it was closed went unseen
            for died in waiters:
                died.set()

    def _died(self, name: str) -> None:
        for died in self._waiters.get(name, ()):
            died.set()

    def close(self) -> None:
        self._closing.set()
        if self._close_stream is not None:
            with contextlib.suppress(Exception):
                self._close_stream()
