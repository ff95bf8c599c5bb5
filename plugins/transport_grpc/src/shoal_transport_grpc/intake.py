"""How the server takes calls in: each kernel method registered, so each has an intake of its own.

Why: ``grpc.aio``'s server (grpcio >= 1.62, ``AioServer._server_main_loop``) keeps one
``request_call`` outstanding per *registered* method, plus one for every method it finds
through a generic handler, and asks C-core for a method's next call only once the previous one
has gone through several turns of the event loop (the completion-queue reader completes the
request's future, its task resumes, ``asyncio.wait`` wakes the main loop, which creates the
call's task and a new request task, whose first step posts the request). On a manager's busy
loop each of those turns waits behind everything else ready, so a single intake takes in only
~150 calls a second on a loop running 1 ms of callbacks per iteration (docs/benchmarks.md).
Served through one generic handler, as before, every method shared that one intake: a
heartbeat waited behind every status report and control call queued before it. Registered,
each method is taken in by its own request, beside the others, and C-core matches a
registered method's calls without the generic path's method-name lookup.

What registering does not do: raise the server's total rate on a busy loop. Measured
(``bench/bench_grpc_intake.py``, docs/benchmarks.md), a call still costs ~4 turns of that loop
over all methods together, even with many requests outstanding per method (tried through
grpcio's internals), so the methods with calls waiting share the rate about equally: under a
flood of other calls a heartbeat gets its method's share, not its place in the queue. Taking
calls in at a rate a busy manager needs takes a loop of its own (``servingloop``).

The generic handler stays behind the registered methods: a method whose name is not
``/service/method`` is served through it, and it answers ``None`` (UNIMPLEMENTED) for names
nobody serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import grpc

#: ``registered``: each method its own intake (the default); ``generic``: all methods behind one
#: generic handler, one intake for all (how the transport served before; kept for the bench).
Intake = Literal["registered", "generic"]


def split_method(name: str) -> tuple[str, str] | None:
    """``/shoal.Dispatcher/Heartbeat`` -> (``shoal.Dispatcher``, ``Heartbeat``); None if not that shape."""
    empty, slash, rest = name.partition("/")
    service, slash2, method = rest.partition("/")
    if empty or not slash or not slash2 or not service or not method or "/" in method:
        return None
    return service, method


def registrable(methods: Mapping[str, Any]) -> dict[str, Any]:
    """The methods among ``methods`` that ``register`` registers, by name."""
    return {name: handler for name, handler in methods.items() if split_method(name) is not None}


def by_service(methods: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The methods that can be registered, grouped by service (gRPC registers per service)."""
    grouped: dict[str, dict[str, Any]] = {}
    for name, handler in methods.items():
        split = split_method(name)
        if split is not None:
            grouped.setdefault(split[0], {})[split[1]] = handler
    return grouped


def register(server: grpc.aio.Server, methods: Mapping[str, Any]) -> bool:
    """Register every method of ``/service/method`` shape (before ``server.start``).

    False on a grpcio without registered methods in ``grpc.aio`` (before 1.62): the generic
    handler then serves every method, as it did before.
    """
    add = getattr(server, "add_registered_method_handlers", None)
    if add is None:
        return False
    for service, handlers in by_service(methods).items():
        add(service, handlers)
    return True
