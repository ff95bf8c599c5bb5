"""gRPC's wake-up socket made non-blocking, so that a busy event loop cannot ration every gRPC
event of its process to about one per loop turn.

Why: ``grpc.aio`` (its poller engine, grpcio 1.85) has one completion queue per process and a
poller thread. For each completion event (a message read or written, a call's end, a call
taken in) the thread queues the event and writes one byte to a socket pair; every event loop
gRPC runs on watches the other end with a reader (``PollerCompletionQueue._handle_events``)
that reads *one* byte and then handles every queued event. The writing end is a blocking
socket, and a Unix socket pair holds only 278 one-byte writes (this machine's kernel). A loop
reads one byte per turn; a leader at scale completes many events per turn. Once the socket is
full, the poller thread blocks in ``write`` until a reader takes a byte, and then queues one
more event: from then on the whole process gets about one gRPC event per loop turn, whatever
has arrived, and Raft messages wait behind hundreds of others. Seen: the leader's socket sat
at 278 unread bytes through a 20,000-replica create on 1,000 hollow nodes (the lead's samples
of 2026-12-07 in docs/benchmarks.md), and the followers, whose loops take ``transport.completion-reader``'s
events one turn at a time, missed the leader's heartbeats for 1.1-1.7 s.

Two changes, both needed:

- The writing end is made non-blocking: a write into a full socket fails (gRPC ignores the
  result) and the event is queued all the same. A full socket already wakes a reader, and each
  wake handles the whole queue, so no event waits for a byte of its own and none is lost.
- Each loop's reader is replaced by ``Reader``, which takes every byte waiting, not one, before
  gRPC's own handler takes the last and handles the queue. Without it, the non-blocking socket
  stays full under load and every loop turn of every loop reading it is one more wake with
  little to do: at 100,000 replicas the leader's CPU doubled (the lead's runs of 2026-12-07).
  The readers of one process (a daemon's loop and its serving loop) share one lock, so that
  the bytes of an event are never taken by one reader while the other is between its read and
  its look at the queue; a reader that finds the lock taken leaves the wake to the holder (the
  socket stays readable if anything is left, so nothing is missed).

The sockets are found from the reader gRPC puts on a loop (``grpc_reader``, by its callback's name): its
callback is a bound method of the completion queue, which holds the pair. With another
grpcio, where any of that is not there, ``unblock`` changes nothing and says so.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import socket
import threading
from typing import Any

log = logging.getLogger(__name__)

#: The most bytes one wake takes off the socket at once (a full socket holds a few hundred).
_TAKE = 65536
#: Held by whichever loop is taking bytes and handling the queue (one completion queue per process).
_LOCK = threading.Lock()


class Reader:
    """A loop's reader of gRPC's wake-up socket that takes every waiting byte per wake.

    ``handle`` is gRPC's own (``PollerCompletionQueue._handle_events`` bound to the loop): it
    reads one byte and then handles every queued event, running this loop's in place and
    handing the others to their loops."""

    def __init__(self, sock: socket.socket, handle: Any) -> None:
        self.sock = sock
        self.handle = handle

    def __call__(self) -> None:
        if not _LOCK.acquire(blocking=False):
            return  # the other loop is handling the queue; what it leaves keeps the socket readable
        try:
            try:
                waiting = len(self.sock.recv(_TAKE, socket.MSG_PEEK))
            except BlockingIOError:
                return
            if waiting > 1:
                self.sock.recv(waiting - 1)
            self.handle()
        finally:
            _LOCK.release()


def is_grpc_handler(callback: Any) -> bool:
    """Whether ``callback`` is gRPC's own completion-queue reader (by its function's name)."""
    return (
        isinstance(callback, functools.partial) and getattr(callback.func, "__name__", "") == "_handle_events"
    )


def grpc_reader(loop: asyncio.AbstractEventLoop) -> tuple[Any, Any] | None:
    """(socket, callback) of gRPC's completion-queue reader on ``loop`` (its own or a
    ``Reader``); None if it has none. Call on ``loop``'s own thread (it reads the selector)."""
    selector = getattr(loop, "_selector", None)
    if selector is None:
        return None
    for key in list(selector.get_map().values()):
        callback = getattr(key.data[0], "_callback", None)
        if isinstance(callback, Reader) or is_grpc_handler(callback):
            return key.fileobj, callback
    return None


def _wake_writer(reading: socket.socket, callback: Any) -> socket.socket | None:
    """The writing end of gRPC's wake-up socket pair, found from its reader (``grpc_reader``)."""
    handle = callback.handle if isinstance(callback, Reader) else callback
    queue = getattr(getattr(handle, "func", None), "__self__", None)
    if queue is None:
        return None
    for held in gc.get_referents(queue):
        if (
            isinstance(held, socket.socket)
            and held.family == socket.AF_UNIX
            and held.fileno() not in (-1, reading.fileno())
        ):
            return held
    return None


def unblock(loop: asyncio.AbstractEventLoop) -> bool:
    """Make gRPC's wake-up writes non-blocking and ``loop``'s reader a ``Reader`` (see the
    module's doc); True if both are.

    Call on ``loop``'s own thread once gRPC has a channel or a server there. gRPC's completion
    queue is one per process (made anew if gRPC shuts down and starts again), so calling it
    for every new channel or server costs a look at the loop's readers and nothing more."""
    found = grpc_reader(loop)
    if found is None:
        return False
    sock, callback = found
    writer = _wake_writer(sock, callback)
    if writer is None:
        return False
    if writer.getblocking():
        writer.setblocking(False)
        log.debug("grpc transport: gRPC's wake-up socket made non-blocking")
    if not isinstance(callback, Reader):
        loop.remove_reader(sock)
        loop.add_reader(sock, Reader(sock, callback))
    return True
