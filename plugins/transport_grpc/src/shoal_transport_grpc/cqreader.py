"""With the serving thread and ``transport.completion-reader`` (on by default): the handlers'
loop reads gRPC's completion events, not the serving loop.

It was off by default for a while: with it, managers elected new leaders during 100,000-task
creates and removals on 1,000 hollow nodes in 6 of 7 runs (docs/benchmarks.md, the lead's runs
of 2026-12-07). The cause was gRPC's wake-up socket, not this module: with only the handlers'
busy loop reading it one byte per turn, it filled, gRPC's poller thread blocked on it, and the
process got about one gRPC event per loop turn, Raft messages included. ``wakeups`` mends
that (non-blocking writes, every waiting byte taken per wake); with it, no election in 3 runs
with the reader on.

Why: ``grpc.aio`` (its poller engine, grpcio 1.85) has one completion queue per process. A
poller thread queues each event and writes a byte to a socket pair, and every loop gRPC runs
on has a reader on that socket (``PollerCompletionQueue._handle_events``) that drains the
whole queue: it runs its own loop's events in place and hands each other one to its loop with
``call_soon_threadsafe``. With a serving loop in the process, both loops woke at every event,
and the idle serving loop usually drained first: the handlers' loop's events (a Raft stream's
messages read and written, a call's end) crossed threads once more, and the serving thread took
the GIL at each. Measured in one run (docs/benchmarks.md): the leader spent 0.12 ms more CPU per
Raft write with the serving thread than without. At 100,000 replicas on 1,000 hollow nodes,
where every task is several stream messages on the leader, the create took 74-81 s without this
(leader 61-68 CPU s) and 46-48 s with it (leader 36-37 CPU s), every session kept (the lead's
runs of 2026-12-07 in docs/benchmarks.md).

How: once the handlers' loop has gRPC's reader too (gRPC adds it with the first channel or call
there), the serving loop's reader is removed. The handlers' loop then drains every event: its
own run in place, and the calls the serving loop took in are handed to it (a call's first
crossing is now to the serving loop and back, one more per call; a stream's messages cross
none). When the handlers' loop is busy, taking calls in must not wait for its iterations (the
serving thread's purpose), so the serving loop looks at the socket every ``PERIOD`` seconds and
drains it itself when it stayed readable across two looks: calls wait at most ~2 ``PERIOD``
more, as they did before for a loop turn.

The reader is found by grpcio's callback name on the selector (``install`` changes nothing if it
is not there, e.g. another grpcio's).
"""

from __future__ import annotations

import asyncio
import select
from typing import Any

from shoal_transport_grpc import wakeups
from shoal_transport_grpc.wakeups import grpc_reader

#: How often the serving loop looks whether gRPC's events wait unread (seconds).
PERIOD = 0.005


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


class Watchdog:
    """On the serving loop: leaves gRPC's events to ``home``, draining only what waits unread."""

    def __init__(
        self, serving: asyncio.AbstractEventLoop, home: asyncio.AbstractEventLoop, sock: Any, drain: Any
    ) -> None:
        self._serving = serving
        self._home = home
        self._sock = sock
        self._fd: int = sock.fileno()
        self._drain = drain
        self._home_reads = False
        self._waiting = False  # readable at the last look
        self._timer: asyncio.TimerHandle | None = None
        self.drained = 0  # drains the serving loop did itself (for tests and benches)

    @property
    def home_reads(self) -> bool:
        """Whether the serving loop has left gRPC's events to home."""
        return self._home_reads

    def start(self) -> None:
        """On the serving loop: ask home whether it reads gRPC's socket too; look again later."""
        self._ask_home()

    def _ask_home(self) -> None:
        try:
            self._home.call_soon_threadsafe(self._look_at_home)
        except RuntimeError:  # home closed: the process is stopping
            return
        self._timer = self._serving.call_later(PERIOD * 20, self._ask_again)

    def _ask_again(self) -> None:
        if not self._home_reads:
            self._ask_home()

    def _look_at_home(self) -> None:
        """On home: if gRPC's reader watches the same socket there, stop reading it on serving."""
        wakeups.unblock(self._home)  # (its reader may be gRPC's own if no channel made it ours)
        found = grpc_reader(self._home)
        if found is not None and found[0].fileno() == self._fd:
            try:
                self._serving.call_soon_threadsafe(self._leave_to_home)
            except RuntimeError:
                pass

    def _leave_to_home(self) -> None:
        if self._home_reads or self._serving.is_closed():
            return
        self._home_reads = True
        self._serving.remove_reader(self._sock)
        self._timer = self._serving.call_later(PERIOD, self._look)

    def _look(self) -> None:
        if _readable(self._fd):
            if self._waiting:
                self.drained += 1
                try:
                    self._drain()
                except BlockingIOError:  # home read it between the look and the drain
                    pass
            self._waiting = not self._waiting
        else:
            self._waiting = False
        self._timer = self._serving.call_later(PERIOD, self._look)

    def stop(self) -> None:
        """On the serving loop: stop looking (the loop is about to end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def install(serving: asyncio.AbstractEventLoop, home: asyncio.AbstractEventLoop) -> Watchdog | None:
    """On ``serving``: start leaving gRPC's events to ``home``; None if gRPC has no reader there."""
    found = grpc_reader(serving)
    if found is None:
        return None
    watchdog = Watchdog(serving, home, *found)
    watchdog.start()
    return watchdog
