"""``transport.serving-thread=on``: the server takes calls in on a loop of its own; handlers
still run on the caller's loop.

Issue 18: on a manager's busy loop, ``grpc.aio`` took in ~5 loop iterations per call, one call
after another (a single ``request_call`` outstanding), so 1,000 nodes' heartbeats queued past
their deadline. These tests count loop iterations, not seconds, so a slow machine does not
change what they see.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from shoal.plugin import PeerIdentity
from shoal.roles import PluginContext
from shoal.testing.transport import COUNT, ECHO, ClusterPKI, TestService
from shoal_transport_grpc import GrpcTransport, bridge, cqreader, handoff

CALLS = 50
#: How long each iteration of the "busy" loop runs Python code, holding the GIL.
SPIN_SECONDS = 0.002
HANG = "/shoal.Test/Hang"


@pytest.fixture
def pki() -> ClusterPKI:
    return ClusterPKI(cluster_id="cluster-a")


def _serving_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("grpc-server")]


def _keep_busy(
    loop: asyncio.AbstractEventLoop, spin_seconds: float = SPIN_SECONDS
) -> tuple[Callable[[], int], Callable[[], None]]:
    """Run a ``spin_seconds`` callback in every iteration of ``loop``; returns (iterations so far, stop)."""
    state = {"iterations": 0, "stop": False}

    def spin() -> None:
        began = time.perf_counter()
        while time.perf_counter() - began < spin_seconds:
            pass
        state["iterations"] += 1
        if not state["stop"]:
            loop.call_soon(spin)

    def stop() -> None:
        state["stop"] = True

    loop.call_soon(spin)
    return (lambda: state["iterations"]), stop


async def test_calls_are_taken_in_while_the_handlers_loop_is_busy(pki: ClusterPKI) -> None:
    transport = GrpcTransport(serving_thread=True, completion_reader=True)
    service = TestService()
    server = await transport.serve("127.0.0.1:0", pki.node("mgr-1"), service.unary(), service.streams())
    tls = pki.node("w", "swarm-worker")
    try:
        await transport.call(server.address, ECHO, b"warm", tls=tls, timeout=30)  # connected
        # The serving loop has left gRPC's events to this loop (``cqreader``): calls are then
        # taken in by its watch of the completion queue's socket while this loop is busy.
        reader = server._cq_reader  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while not reader.home_reads:
            assert time.monotonic() < deadline, "the serving loop never left gRPC's events to this loop"
            await transport.call(server.address, ECHO, b"warm", tls=tls, timeout=30)
            await asyncio.sleep(0.05)
        # Each busy turn outlasts the watch's two looks (``cqreader.PERIOD`` apart): this loop
        # takes every waiting wake-up byte per turn (``wakeups``), so with shorter turns the
        # watch would seldom find the socket still readable at its second look.
        iterations, stop = _keep_busy(asyncio.get_running_loop(), 3 * cqreader.PERIOD)
        try:
            calls = (
                transport.call(server.address, ECHO, b"%d" % i, tls=tls, timeout=120) for i in range(CALLS)
            )
            answers = await asyncio.gather(*calls)
        finally:
            stop()
        assert answers == [b"%d" % i for i in range(CALLS)]
        # On the handlers' loop the server needed 4-5 iterations per call, one call after
        # another (~215 here); on its own loop 0.5-0.9 (and 10-50 per call with CPython's
        # default 5 ms GIL switch interval, which the serving loop shortens).
        assert iterations() < 2 * CALLS, f"{CALLS} calls took {iterations()} iterations of the busy loop"
        assert reader.drained > 0, "the serving loop's watch drained the waiting events itself"
    finally:
        await server.stop(0)
        await transport.close()
    assert _serving_threads() == []  # stop ends the serving thread


async def test_stream_handler_runs_and_is_closed_on_its_loop_when_the_client_goes_away(
    pki: ClusterPKI,
) -> None:
    home = asyncio.get_running_loop()
    seen: list[asyncio.AbstractEventLoop] = []
    closed = asyncio.Event()

    async def hang(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        seen.append(asyncio.get_running_loop())
        try:
            yield b"first"
            await asyncio.Event().wait()  # until cancelled
            yield b"never"
        finally:
            seen.append(asyncio.get_running_loop())
            closed.set()

    transport = GrpcTransport(serving_thread=True)
    server = await transport.serve("127.0.0.1:0", pki.node("mgr-1"), {}, {HANG: hang})
    try:
        stream = transport.stream(server.address, HANG, b"", tls=pki.node("w", "swarm-worker"), timeout=60)
        assert await anext(stream) == b"first"
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(closed.wait(), 30)
        assert seen == [home, home]
    finally:
        await server.stop(0)
        await transport.close()


async def test_serving_thread_off_serves_on_the_callers_loop(pki: ClusterPKI, tmp_path: Path) -> None:
    from shoal_transport_grpc.plugin import shoal_transport_provider

    context = PluginContext(
        role="transport", name="grpc", state_dir=tmp_path, options={"serving-thread": "off"}
    )
    transport = shoal_transport_provider(context=context)
    home = asyncio.get_running_loop()
    seen: list[asyncio.AbstractEventLoop] = []

    async def where(request: bytes, peer: PeerIdentity | None) -> bytes:
        seen.append(asyncio.get_running_loop())
        return request

    server = await transport.serve("127.0.0.1:0", pki.node("mgr-1"), {ECHO: where}, {})
    try:
        assert _serving_threads() == []
        tls = pki.node("w", "swarm-worker")
        assert await transport.call(server.address, ECHO, b"x", tls=tls, timeout=30) == b"x"
        assert seen == [home]
    finally:
        await server.stop(0)
        await transport.close()


async def test_the_completion_reader_is_on_unless_turned_off(pki: ClusterPKI, tmp_path: Path) -> None:
    """The plugin's default serving thread leaves gRPC's completion events to the daemon's loop
    (``cqreader``: less leader CPU per stream message); ``completion-reader=off`` leaves them to
    the serving loop (docs/benchmarks.md, "gRPC's wake-up socket")."""
    from shoal_transport_grpc.plugin import shoal_transport_provider

    for options, expected in (
        ({}, True),
        ({"completion-reader": "off"}, False),
        ({"completion-reader": "on"}, True),
    ):
        context = PluginContext(role="transport", name="grpc", state_dir=tmp_path, options=options)
        transport = shoal_transport_provider(context=context)
        server = await transport.serve("127.0.0.1:0", pki.node("mgr-1"), {}, TestService().streams())
        try:
            assert (server._cq_reader is not None) is expected, options  # type: ignore[attr-defined]
        finally:
            await server.stop(0)
            await transport.close()
    context = PluginContext(
        role="transport", name="grpc", state_dir=tmp_path, options={"completion-reader": "yes"}
    )
    with pytest.raises(ValueError, match="transport option completion-reader must be on or off, got 'yes'"):
        shoal_transport_provider(context=context)


def test_serving_thread_option_must_be_on_or_off(tmp_path: Path) -> None:
    from shoal_transport_grpc.plugin import shoal_transport_provider

    context = PluginContext(
        role="transport", name="grpc", state_dir=tmp_path, options={"serving-thread": "yes"}
    )
    with pytest.raises(ValueError, match="transport option serving-thread must be on or off, got 'yes'"):
        shoal_transport_provider(context=context)


BULK = "/shoal.Dispatcher/UpdateTaskStatus"
BEAT = "/shoal.Dispatcher/Heartbeat"
QUEUED = 40


async def test_a_method_is_taken_in_without_waiting_behind_another_methods_queue(pki: ClusterPKI) -> None:
    """The default server (no serving thread) takes each method's calls in on an intake of its
    own: with 40 status calls waiting to be taken in on a busy loop, a heartbeat is taken in
    within a few loop iterations. Behind one generic handler it waited for the 40 status calls
    first, ~4-5 iterations each (one intake for every method)."""
    loop = asyncio.get_running_loop()
    transport = GrpcTransport()
    bulk_started = asyncio.Event()
    beat_seen_at: list[int] = []
    iterations: Callable[[], int] = lambda: 0  # noqa: E731 - replaced once the loop is busy

    async def bulk(request: bytes, peer: PeerIdentity | None) -> bytes:
        bulk_started.set()
        return request

    async def beat(request: bytes, peer: PeerIdentity | None) -> bytes:
        beat_seen_at.append(iterations())
        return request

    server = await transport.serve("127.0.0.1:0", pki.node("mgr-1"), {BULK: bulk, BEAT: beat}, {})
    tls = pki.node("w", "swarm-worker")
    try:
        for method in (BULK, BEAT):  # connected, and each method called once
            await transport.call(server.address, method, b"warm", tls=tls, timeout=30)
        beat_seen_at.clear()
        iterations, stop = _keep_busy(loop)
        try:
            queued = [
                loop.create_task(transport.call(server.address, BULK, b"s", tls=tls, timeout=120))
                for _ in range(QUEUED)
            ]
            await asyncio.wait_for(bulk_started.wait(), 60)  # the status calls are in
            sent_at = iterations()
            assert await transport.call(server.address, BEAT, b"b", tls=tls, timeout=120) == b"b"
            waited = beat_seen_at[0] - sent_at
            await asyncio.gather(*queued)
        finally:
            stop()
        # Registered: 2-10 iterations (the call's own turns); one intake for all: ~150-180.
        assert waited < QUEUED, f"the heartbeat waited {waited} iterations behind {QUEUED} status calls"
    finally:
        await server.stop(0)
        await transport.close()


def test_grpcio_internals_for_the_handoff_are_the_tested_ones() -> None:
    """The serving thread hands calls to the handlers' loop through grpcio's Cython internals
    (``handoff``), checked against the version pinned in requirements-dev.txt: an upgrade
    that changes them must fail here, not fall back to the bridge unnoticed."""
    assert handoff.unavailable_reason() == ""


async def test_serving_thread_hands_every_call_to_the_handlers_loop_without_the_bridge(
    pki: ClusterPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the serving thread, every call of a registered method runs wholly on the handlers'
    loop (one thread crossing per call, none per message), the first of each method included:
    those gRPC's own intake takes in (its one request per method is posted before the
    handoff's, so it takes the first call and every fourth) are handed over too. Before, they
    crossed by the bridge, a stream's every message twice (a Raft pull stream is the first call
    of its method)."""
    bridged: list[str] = []
    real_call_unary, real_call_stream = bridge.call_unary, bridge.call_stream

    async def counted(handler: Callable[[], Awaitable[bytes]], home: asyncio.AbstractEventLoop) -> bytes:
        bridged.append("unary")
        return await real_call_unary(handler, home)

    def counted_stream(
        handler: Callable[[], AsyncIterator[bytes]], home: asyncio.AbstractEventLoop
    ) -> AsyncIterator[bytes]:
        bridged.append("stream")
        return real_call_stream(handler, home)

    monkeypatch.setattr(bridge, "call_unary", counted)
    monkeypatch.setattr(bridge, "call_stream", counted_stream)
    home = asyncio.get_running_loop()
    seen: list[asyncio.AbstractEventLoop] = []

    async def where(request: bytes, peer: PeerIdentity | None) -> bytes:
        seen.append(asyncio.get_running_loop())
        return request

    service = TestService()
    transport = GrpcTransport(serving_thread=True)
    server = await transport.serve("127.0.0.1:0", pki.node("mgr-1"), {ECHO: where}, service.streams())
    tls = pki.node("w", "swarm-worker")
    try:
        streams = [transport.stream(server.address, COUNT, b"2", tls=tls, timeout=60) for _ in range(8)]
        for stream in streams:  # one after another: the first is gRPC's own intake's
            assert [message.rpartition(b"#")[2] async for message in stream] == [b"0", b"1"]
        calls = (transport.call(server.address, ECHO, b"%d" % i, tls=tls, timeout=60) for i in range(CALLS))
        assert await asyncio.gather(*calls) == [b"%d" % i for i in range(CALLS)]
        assert seen == [home] * CALLS
        assert bridged == [], f"{len(bridged)} calls crossed by the bridge: {bridged}"
    finally:
        await server.stop(0)
        await transport.close()


MESSAGES = 200


async def test_the_handlers_loop_reads_its_own_stream_messages_without_a_thread_crossing(
    pki: ClusterPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the serving thread, gRPC's completion events of the handlers' loop (here a server
    stream's writes and the client's reads of it, both on this loop) are read by that loop
    itself: the serving loop leaves the completion queue to it (``cqreader``). Before, the idle
    serving loop usually drained the queue first and handed each event over
    (``call_soon_threadsafe``): 262-274 crossings for 200 messages."""
    home = asyncio.get_running_loop()
    crossings = 0
    real_call_soon_threadsafe = home.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> asyncio.Handle:
        nonlocal crossings
        crossings += 1
        return real_call_soon_threadsafe(*args, **kwargs)

    service = TestService()
    transport = GrpcTransport(serving_thread=True, completion_reader=True)
    server = await transport.serve("127.0.0.1:0", pki.node("mgr-1"), {}, service.streams())
    tls = pki.node("w", "swarm-worker")
    try:
        reader = getattr(server, "_cq_reader", None)
        deadline = time.monotonic() + 30
        # Connected, and the serving loop has left gRPC's events to home (it learns that home reads).
        while reader is not None and not reader.home_reads:
            assert time.monotonic() < deadline, "the serving loop never left gRPC's events to home"
            warm = transport.stream(server.address, COUNT, b"2", tls=tls, timeout=60)
            assert len([message async for message in warm]) == 2
            await asyncio.sleep(0.05)
        monkeypatch.setattr(home, "call_soon_threadsafe", counted)
        received = 0
        async for _ in transport.stream(server.address, COUNT, b"%d" % MESSAGES, tls=tls, timeout=60):
            received += 1
            await asyncio.sleep(0.001)  # one message at a time, the loop idle between them
        assert received == MESSAGES
        assert crossings < MESSAGES / 4, f"{crossings} thread crossings for {MESSAGES} messages"
    finally:
        monkeypatch.undo()
        await server.stop(0)
        await transport.close()


async def test_a_server_without_the_serving_thread_keeps_grpcs_own_scheduling(pki: ClusterPKI) -> None:
    """The function that routes gRPC's own intake to a handoff is process-wide: a server on the
    caller's loop (no serving thread) beside one with it still serves its calls itself."""
    service = TestService()
    threaded = GrpcTransport(serving_thread=True)
    plain = GrpcTransport()
    first = await threaded.serve("127.0.0.1:0", pki.node("mgr-1"), service.unary(), service.streams())
    second = await plain.serve("127.0.0.1:0", pki.node("mgr-2"), service.unary(), service.streams())
    tls = pki.node("w", "swarm-worker")
    try:
        for transport, server in ((threaded, first), (plain, second)):
            for i in range(6):
                assert await transport.call(server.address, ECHO, b"%d" % i, tls=tls, timeout=30) == b"%d" % i
            stream = transport.stream(server.address, COUNT, b"3", tls=tls, timeout=30)
            assert [message.rpartition(b"#")[2] async for message in stream] == [b"0", b"1", b"2"]
    finally:
        await first.stop(0)
        await second.stop(0)
        await threaded.close()
        await plain.close()


async def test_serving_thread_on_an_untested_grpcio_serves_every_call_by_the_bridge(
    pki: ClusterPKI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If grpcio's internals are not the tested ones, the server says why and falls back to
    the bridge: calls and streams still served, handlers still on the caller's loop."""
    monkeypatch.setattr(handoff, "unavailable_reason", lambda: "grpcio 0.0 is not a tested version")
    transport = GrpcTransport(serving_thread=True)
    service = TestService()
    with caplog.at_level("INFO", logger="shoal.transport.grpc"):
        server = await transport.serve("127.0.0.1:0", pki.node("mgr-1"), service.unary(), service.streams())
    tls = pki.node("w", "swarm-worker")
    try:
        assert "grpcio 0.0 is not a tested version" in caplog.text
        assert await transport.call(server.address, ECHO, b"x", tls=tls, timeout=30) == b"x"
        stream = transport.stream(server.address, COUNT, b"2", tls=tls, timeout=30)
        assert [message.rpartition(b"#")[2] async for message in stream] == [b"0", b"1"]
    finally:
        await server.stop(0)
        await transport.close()
