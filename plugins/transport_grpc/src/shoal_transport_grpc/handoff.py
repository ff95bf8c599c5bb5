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
serves every call, as before) and says why in the log.

gRPC's own intake (one request per registered method, posted first) runs beside these
requests and takes every fourth call, the first of each method among them. Those used to cross
by the bridge, each stream message twice: a Raft pull stream (the first call of its method)
paid two thread crossings per message on a commit's path (a ping-pong over two pull streams
between two processes: 430-800 us a round trip by the bridge, 310-490 us handed over, 280-415
us with no serving thread; docs/benchmarks.md). So the server's main loop starts its calls
through ``_schedule_rpc_coro``, looked up in ``cygrpc``'s module globals at each call, and
``_route_own_intake`` puts a function there that hands a handoff method's call to its
handlers' loop like the others; every other server's calls pass through unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Coroutine, Mapping
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


#: Each serving loop's handoff (one server per serving loop), for the calls gRPC's own intake takes.
_by_serving_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Handoff] = weakref.WeakKeyDictionary()
#: ``cygrpc._schedule_rpc_coro`` as grpcio defines it, once ``_route_own_intake`` replaced it.
_grpc_schedule: Any = None


def _route_own_intake() -> Any:
    """Make gRPC's own intake hand a handoff method's call over; returns grpcio's scheduler.

    Idempotent. The replacement runs on the loop of the server that took the call in: for a
    serving loop with a ``Handoff`` serving ``method_name``, the handling gRPC built for this
    loop (``rpc_coro``, not started yet) is dropped and the call handed over; anything else is
    grpcio's own scheduling, unchanged.
    """
    global _grpc_schedule
    if _grpc_schedule is not None:
        return _grpc_schedule
    cygrpc = _cygrpc()
    grpc_schedule = cygrpc._schedule_rpc_coro

    def schedule(
        rpc_coro: Coroutine[Any, Any, None], rpc_state: Any, loop: asyncio.AbstractEventLoop, method_name: str
    ) -> Coroutine[Any, Any, None]:
        handoff = _by_serving_loop.get(loop)
        if handoff is None or method_name not in handoff.names:
            return grpc_schedule(rpc_coro, rpc_state, loop, method_name)  # type: ignore[no-any-return]
        rpc_coro.close()
        return handoff.hand_over(method_name, rpc_state)

    _grpc_schedule = grpc_schedule
    cygrpc._schedule_rpc_coro = schedule
    return grpc_schedule


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
        self._schedule = _route_own_intake()
        self._resolver = cygrpc._MethodResolver([], dict(methods))
        self._order = list(methods)
        self.names = frozenset(methods)
        self._home = home
        self._intake: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()  # on home; the loop keeps only weak references

    @property
    def home(self) -> asyncio.AbstractEventLoop:
        """The loop the calls are handed to (the handlers' loop), which also reads gRPC's
        completion events once ``cqreader`` leaves them to it."""
        return self._home

    def start(self) -> None:
        """Post the requests; call on the serving loop once the server has started."""
        loop = asyncio.get_running_loop()
        _by_serving_loop[loop] = self
        for name in self._order:
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
            if not self._post(name, rpc_state):
                return

    async def hand_over(self, name: str, rpc_state: Any) -> None:
        """On the serving loop: a call gRPC's own intake took in, handed over like the others."""
        self._post(name, rpc_state)

    def _post(self, name: str, rpc_state: Any) -> bool:
        """Start the call's handling on home; False if that loop is closed (the server's stop
        then cancels the call)."""
        try:
            self._home.call_soon_threadsafe(self._run, name, rpc_state)
        except RuntimeError:
            return False
        return True

    def _run(self, name: str, rpc_state: Any) -> None:
        """On ``home``: the call's handling, as gRPC's own server loop starts it."""
        home = self._home
        handling = self._handle_rpc(name, self._resolver, (), rpc_state, home, False)
        task = home.create_task(self._schedule(handling, rpc_state, home, name), name=f"rpc {name}")
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def stop(self) -> None:
        """End the intake tasks (on the serving loop); calls already handed over finish on home."""
        if _by_serving_loop.get(asyncio.get_running_loop()) is self:
            del _by_serving_loop[asyncio.get_running_loop()]
        for task in self._intake:
            task.cancel()
        await asyncio.gather(*self._intake, return_exceptions=True)
        self._intake.clear()
