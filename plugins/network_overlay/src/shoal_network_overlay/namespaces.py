"""Sockets opened inside another network namespace (a container's, or the node's).

A socket belongs for its whole life to the network namespace it was created in, whichever
thread later uses it. So the embedded DNS server, like Docker's, creates its sockets in the
container's namespace on a short-lived helper thread that first calls ``setns(2)`` (Python 3.11
has no ``os.setns``: through ``ctypes``), and then serves them from the daemon's event loop. A
new thread each time: ``setns`` changes only the calling thread, and a pool thread left in a
container's namespace would open later sockets there.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from shoal.plugin import NetworkError

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), path)
    finally:
        os.close(fd)


async def in_namespace(path: str | None, make: Callable[[], T]) -> T:
    """Run ``make`` in network namespace ``path`` (``None``: here) and return what it made."""
    if path is None:
        return make()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            try:
                _setns(path)
            except OSError as exc:
                raise NetworkError(f"cannot enter the network namespace {path}: {exc.strerror}") from None
            result = make()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, result, None)

    threading.Thread(target=work, name="shoal-setns", daemon=True).start()
    return await done


def bound_socket(kind: int, address: tuple[str, int]) -> Callable[[], socket.socket]:
    """A maker for a non-blocking socket of ``kind`` (``SOCK_DGRAM``/``SOCK_STREAM``) bound to
    ``address`` (TCP ones listening)."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            if kind == socket.SOCK_STREAM:
                sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    return make
