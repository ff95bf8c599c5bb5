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

A ``start`` looks at the container it started (its ID, PID and healthcheck), and the ``wait``
that follows at once looked again, only to learn what the start had just seen: one engine call
per task (a third of the agent's calls for a running task beside the create and the start;
podman spends 2-3 ms of CPU on each) while the node's other tasks are still being created.
``ahead`` registers the waiter before the start's look and ``keep`` hands that look and the
registration to the ``wait`` (``handed``), so the rule above holds for the hand-over as well:
registered (with the stream open) before the look, woken by any death after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

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
        #: What a ``start`` saw of a container and its waiter, until its ``wait`` takes them.
        self._kept: dict[str, tuple[asyncio.Event, Any]] = {}
        self.subscriptions = 0  # how many times the stream was opened (for tests)

    @contextlib.contextmanager
    def ahead(self, name: str) -> Iterator[Callable[[Any], None]]:
        """Around a ``start`` of container ``name`` and its look at the container: call the
        function given with what the look saw, and the ``wait`` that follows takes it
        (``handed``) instead of looking again. Nothing is kept when the stream is not open
        (the wait then looks as before), when the block raises, or when the function is not
        called."""
        self._start()
        self.forget(name)
        died = asyncio.Event() if self._open.is_set() else None
        if died is not None:
            self._waiters.setdefault(name, set()).add(died)
        kept = False

        def keep(seen: Any) -> None:
            nonlocal kept
            if died is not None:
                self._kept[name] = (died, seen)
                kept = True

        try:
            yield keep
        finally:
            if died is not None and not kept:
                self._unregister(name, died)

    def handed(self, name: str) -> tuple[asyncio.Event, Any] | None:
        """What ``ahead`` kept for ``name`` (its waiter, and what the start saw), taken."""
        return self._kept.pop(name, None)

    def forget(self, name: str) -> None:
        """Drop what ``ahead`` kept for ``name`` (its container is removed, or started again)."""
        kept = self._kept.pop(name, None)
        if kept is not None:
            self._unregister(name, kept[0])

    @contextlib.asynccontextmanager
    async def watching(self, name: str, died: asyncio.Event | None = None) -> AsyncIterator[asyncio.Event]:
        """Within this block, the event is set when container ``name`` may have died.

        Entered only once the stream is open: look at the container after entering, and
        ``wait()`` on the event (then ``clear()`` it) while it runs. ``died``: the waiter
        ``handed`` gave, registered before the start's look (which then stands for this one).
        """
        self._start()
        if died is None:
            died = asyncio.Event()
            self._waiters.setdefault(name, set()).add(died)
        try:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns when its inner
                # wait is done as a cancellation arrives, swallowing it, and the caller's wait
                # (a task told to stop cancels it, then awaits it) slept on a running container.
                async with asyncio.timeout(OPEN_TIMEOUT):
                    await self._open.wait()
            except TimeoutError:
                raise RuntimeError_(
                    f"engine at {self._endpoint} sends no events (is it running?)", temporary=True
                ) from None
            yield died
        finally:
            self._unregister(name, died)

    def _unregister(self, name: str, died: asyncio.Event) -> None:
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
