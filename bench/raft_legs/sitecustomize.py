"""Timestamps on a Raft write's path, patched into a ``shoal daemon`` by ``bench_raft_legs.py``.

Python imports ``sitecustomize`` at start-up from any directory on ``PYTHONPATH``; the bench puts
this directory there for its three daemons only, with ``SHOAL_BENCH_LEGS_DIR`` naming where to
write. Nothing here changes what the daemon does: each patched function stamps
``time.perf_counter_ns()`` (``CLOCK_MONOTONIC``, one clock for every process on the machine)
and calls the original. Stamps are buffered and appended to ``<dir>/<pid>.txt``.
"""

from __future__ import annotations

import os

_DIR = os.environ.get("SHOAL_BENCH_LEGS_DIR")

if _DIR:
    import atexit
    import functools
    import time
    from typing import Any

    _buffer: list[str] = []
    _now = time.perf_counter_ns

    def _flush() -> None:
        with open(f"{_DIR}/{os.getpid()}.txt", "a") as out:
            out.writelines(_buffer)
        _buffer.clear()

    def stamp(name: str) -> None:
        _buffer.append(f"{_now()} {name}\n")
        if len(_buffer) >= 2000:
            _flush()

    atexit.register(_flush)

    def _around(owner: Any, attr: str, before: str, after: str | None = None) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def patched(*args: Any, **kwargs: Any) -> Any:
            stamp(before)
            result = original(*args, **kwargs)
            if after:
                stamp(after)
            return result

        setattr(owner, attr, patched)

    def _around_async(owner: Any, attr: str, before: str, after: str | None, *, static: bool = False) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        async def patched(*args: Any, **kwargs: Any) -> Any:
            stamp(before)
            result = await original(*args, **kwargs)
            if after:
                stamp(after)
            return result

        setattr(owner, attr, staticmethod(patched) if static else patched)

    def _install() -> None:
        from shoal.daemon import localapi
        from shoal_store_raft import provider, spares, wal, wire

        _around(localapi, "_parse_request", "request")  # the leader read the client's line
        # The leader encodes its answer line and writes it.
        _around_async(localapi.LocalAPIServer, "_send", "answer", None, static=True)
        _around(provider.RaftStore, "submit", "propose")  # the entry is appended (every write)
        _around(spares.QuorumFirstSender, "send", "send")  # appends (leader), acks (follower)
        _around(wire, "encode", "to_grpc")  # a pull stream's message handed to gRPC
        _around(wire, "decode", "from_grpc")  # a message read from a pull stream
        _around(wal.WAL, "save", "wal_write", "wal_done")
        _around(provider.RaftStore, "_apply", "apply", "applied")
        # The leader's deferred WAL write starts when the loop turn that wrote its appends to
        # gRPC ends: from ``to_grpc`` to this stamp is the stream's send path on the loop.
        _around(provider.RaftStore, "_finish_deferred", "deferred")
        from shoal import rpc

        _around(rpc, "authorize", "authorize")  # the kernel's check of a stream message

    _install()
