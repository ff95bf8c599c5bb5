"""With the serving thread: calls taken in on the serving loop, handled wholly on the handlers' loop.

Why: on a busy loop, ``grpc.aio``'s server took in ~4 loop iterations per call, over all methods
together, even with each method registered (``intake``) and even with many requests
outstanding: a request is posted and matched through the loop that owns it. On a loop of its
own (``servingloop``) it takes calls in fast. The bridge (``bridge``) then carries each call
to the handlers' loop and back, and each message of a stream crosses the threads too. This
module takes calls in on the serving loop and starts each call's whole handling (reading the
request, the handler, writing the answer or the stream's messages, the status) on the
handlers' loop, as ``grpc.aio`` would on its own loop: one thread crossing per call, none per
message. Measured (``bench/bench_grpc_intake.py``, a loop busy with 1 ms callbacks, 200
nodes calling 4 methods): ~200 calls a second taken in with the server on that loop, 719 with
the bridge, 2,117 with this (heartbeats' median latency 2.6 s, 411 ms, 81 ms); 100,000 replicas
on 1,000 hollow nodes ran in 50.7 s instead of 77.2 s with the bridge (docs/benchmarks.md).

How: ``grpc.aio`` has no public way to run a call's handling on another loop, so this uses
its Cython internals, exactly as ``AioServer._server_main_loop`` does for each call
(``AioServer._request_registered_call``, ``_handle_rpc``, ``_schedule_rpc_coro``,
``_MethodResolver``). ``unavailable_reason`` checks the grpcio version against the tested
ones and each name and signature; if anything differs, the server does without (the bridge
serves every call, as before) and says why in the log. gRPC's own intake (one request per
method) still runs beside these requests: its calls go through the bridge.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Mapping
from typing import Any

import grpc

log = logging.getLogger("shoal.transport.grpc")

#: grpcio versions whose internals this was written against (``requirements-dev.txt`` pins one).
TESTED_VERSIONS = ("1.85.",)
#: Requests kept outstanding per method, beside gRPC's own one.
REQUESTS_PER_METHOD = 3

_SIGNATURES = {
    "_handle_rpc": [
        "method_name",
        "method_resolver",
        "interceptors",
        "rpc_state",
        "loop",
        "concurrency_exceeded",
    ],
    "_schedule_rpc_coro": ["rpc_coro", "rpc_state", "loop", "method_name"],
}


def _cygrpc() -> Any:
    from grpc._cython import cygrpc  # type: ignore[attr-defined]

    return cygrpc


def unavailable_reason() -> str:
    """Empty if this grpcio's internals are the ones this module uses; else why not."""
    version = grpc.__version__
    if not version.startswith(TESTED_VERSIONS):
        return f"grpcio {version} is not a tested version ({', '.join(v + 'x' for v in TESTED_VERSIONS)})"
    try:
        cygrpc = _cygrpc()
    except ImportError as exc:
        return f"grpc._cython.cygrpc cannot be imported: {exc}"
    for name, parameters in _SIGNATURES.items():
        function = getattr(cygrpc, name, None)
        if function is None:
            return f"cygrpc.{name} is missing"
        try:
            found = list(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            return f"cygrpc.{name} has no readable signature"
        if found != parameters:
            return f"cygrpc.{name} takes ({', '.join(found)}), expected ({', '.join(parameters)})"
    if not hasattr(cygrpc, "_MethodResolver"):
        return "cygrpc._MethodResolver is missing"
    server = getattr(cygrpc, "AioServer", None)
    for attribute in ("_request_registered_call", "is_running"):
        if not hasattr(server, attribute):
            return f"cygrpc.AioServer.{attribute} is missing"
    return ""


class Handoff:
    """Requests kept outstanding on the serving loop; each call they get runs on ``home``."""

    def __init__(
        self, server: grpc.aio.Server, methods: Mapping[str, Any], home: asyncio.AbstractEventLoop
    ) -> None:
        """``methods``: ``RpcMethodHandler`` by full name, whose behaviours run on ``home``
        (each must be registered with ``server``)."""
        cygrpc = _cygrpc()
        self._core = server._server  # type: ignore[attr-defined]
        self._handle_rpc = cygrpc._handle_rpc
        self._schedule = cygrpc._schedule_rpc_coro
        self._resolver = cygrpc._MethodResolver([], dict(methods))
        self._names = list(methods)
        self._home = home
        self._intake: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()  # on home; the loop keeps only weak references

    def start(self) -> None:
        """Post the requests; call on the serving loop once the server has started."""
        loop = asyncio.get_running_loop()
        for name in self._names:
            for _ in range(REQUESTS_PER_METHOD):
                self._intake.append(loop.create_task(self._take_in(name), name=f"handoff {name}"))

    async def _take_in(self, name: str) -> None:
        method = name.encode()
        while self._core.is_running():  # never post to a server shutting down (or destroyed)
            try:
                rpc_state = await self._core._request_registered_call(method)
            except asyncio.CancelledError:
                raise
            except Exception:  # the server stopped: its outstanding requests fail
                return
            try:
                self._home.call_soon_threadsafe(self._run, name, rpc_state)
            except RuntimeError:  # the handlers' loop is closed: the server's stop cancels the call
                return

    def _run(self, name: str, rpc_state: Any) -> None:
        """On ``home``: the call's handling, as gRPC's own server loop starts it."""
        home = self._home
        handling = self._handle_rpc(name, self._resolver, (), rpc_state, home, False)
        task = home.create_task(self._schedule(handling, rpc_state, home, name), name=f"rpc {name}")
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def stop(self) -> None:
        """End the intake tasks (on the serving loop); calls already handed over finish on home."""
        for task in self._intake:
            task.cancel()
        await asyncio.gather(*self._intake, return_exceptions=True)
        self._intake.clear()
