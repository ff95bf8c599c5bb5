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

With the writing end non-blocking, a write into a full socket fails (gRPC ignores the result)
and the event is queued all the same: a full socket already wakes a reader, and each wake
handles the whole queue, so no event waits for a byte of its own and none is lost. What is left
behind once the events stop is at most a socket's worth of bytes, each one a wake that finds
the queue empty (microseconds).

The sockets are found from the reader gRPC puts on a loop (``cqreader.grpc_reader``): its
callback is a bound method of the completion queue, which holds the pair. With another
grpcio, where any of that is not there, ``unblock`` changes nothing and says so.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket

from shoal_transport_grpc import cqreader

log = logging.getLogger(__name__)


def _wake_writer(loop: asyncio.AbstractEventLoop) -> socket.socket | None:
    """The writing end of gRPC's wake-up socket pair, found from its reader on ``loop``."""
    found = cqreader.grpc_reader(loop)
    if found is None:
        return None
    reading, callback = found
    queue = getattr(getattr(callback, "func", None), "__self__", None)
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
    """Make gRPC's wake-up writes non-blocking (see the module's doc); True if they are.

    Call on ``loop``'s own thread once gRPC has a channel or a server there. gRPC's completion
    queue is one per process (made anew if gRPC shuts down and starts again), so calling it
    for every new channel or server costs a look at the loop's readers and nothing more."""
    writer = _wake_writer(loop)
    if writer is None:
        return False
    if writer.getblocking():
        writer.setblocking(False)
        log.debug("grpc transport: gRPC's wake-up socket made non-blocking")
    return True
