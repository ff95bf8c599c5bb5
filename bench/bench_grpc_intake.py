"""How many unary calls a ``grpc.aio`` server answers per second while its event loop is busy.

At 10,000 replicas on 1,000 hollow nodes the agents' heartbeats and status reports timed out
after 5 s although neither the leader's loop nor the fleet's stalled for more than ~1.4 s: the
leader's loop was merely busy (many short callbacks in every iteration). This bench isolates
that: a server process answers an echo method while ``--busy`` callbacks of ~20 us each run in
every loop iteration (re-scheduled with ``call_soon``), and a client process sends ``--calls``
concurrent calls over ``--channels`` connections; it prints the calls per second and the
latencies. ``--servers`` starts that many servers on the port (SO_REUSEPORT).

``--variants`` compares, in the same run, how the server is set up:

- ``loop``: the ``grpc.aio`` server on the busy loop itself (shoal's transport by default);
- ``thread``: the server on a ``ServingLoop`` of its own (a thread), the echo handler still
  run on the busy loop through ``bridge.call_unary``, as shoal's transport does with
  ``transport.serving-thread=on`` (which also shortens the process's GIL switch interval to
  1 ms, see ``servingloop``).

It also prints how many iterations the busy loop ran per call answered (``it/call``): the
``loop`` server needs several iterations per call *one call after another*, because
``grpc.aio`` keeps a single ``request_call`` outstanding.

    .venv/bin/python bench/bench_grpc_intake.py --busy 0
    .venv/bin/python bench/bench_grpc_intake.py --busy 50 --variants loop,thread
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time
from typing import Any

import grpc
from shoal_transport_grpc import bridge
from shoal_transport_grpc.servingloop import ServingLoop

SPIN_SECONDS = 20e-6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start_servers(port: int, servers: int, handler: Any) -> list[grpc.aio.Server]:
    """Start the servers; the caller must keep the list (a collected server shuts down)."""
    started = []
    for _ in range(servers):
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        started.append(server)
    return started


async def serve(
    port: int, busy: int, servers: int, seconds: float, variant: str, spins: Any, ready: Any
) -> None:
    home = asyncio.get_running_loop()

    async def answer(request: bytes) -> bytes:
        return request

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        if variant == "thread":
            return await bridge.call_unary(lambda: answer(request), home)
        return await answer(request)

    handler = grpc.method_handlers_generic_handler("t.T", {"E": grpc.unary_unary_rpc_method_handler(echo)})
    if variant == "thread":
        serving = ServingLoop("grpc-intake-bench")
        started = await serving.run(_start_servers(port, servers, handler))
    else:
        started = await _start_servers(port, servers, handler)

    def spin() -> None:  # one short callback, again in the next iteration
        began = time.perf_counter()
        while time.perf_counter() - began < SPIN_SECONDS:
            pass
        spins.value += 1
        home.call_soon(spin)

    for _ in range(busy):
        home.call_soon(spin)
    ready.set()
    await asyncio.sleep(seconds)
    del started


def run_server(
    port: int, busy: int, servers: int, seconds: float, variant: str, spins: Any, ready: Any
) -> None:
    asyncio.run(serve(port, busy, servers, seconds, variant, spins, ready))


async def client(port: int, calls: int, channels: int) -> tuple[float, list[float]]:
    opened = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    stubs = [channel.unary_unary("/t.T/E") for channel in opened]
    await asyncio.gather(*(stub(b"x", timeout=20) for stub in stubs))  # connected first

    async def one(index: int) -> float:
        began = time.perf_counter()
        await stubs[index % channels](b"x", timeout=60)
        return time.perf_counter() - began

    began = time.perf_counter()
    latencies = sorted(await asyncio.gather(*(one(i) for i in range(calls))))
    total = time.perf_counter() - began
    await asyncio.gather(*(channel.close() for channel in opened))
    return total, latencies


def measure(args: argparse.Namespace, variant: str) -> None:
    port = free_port()
    # spawn: a forked child would inherit the parent's gRPC state (the client side runs here).
    context = multiprocessing.get_context("spawn")
    spins = context.Value("q", 0, lock=False)
    ready = context.Event()
    server = context.Process(
        target=run_server, args=(port, args.busy, args.servers, 120.0, variant, spins, ready), daemon=True
    )
    server.start()
    if not ready.wait(60):
        raise SystemExit(f"the {variant} server did not start within 60 s")
    time.sleep(0.5)  # the busy callbacks under way
    try:
        before = spins.value
        total, latencies = asyncio.run(client(port, args.calls, args.channels))
        iterations = (spins.value - before) / args.busy if args.busy else 0.0
    finally:
        server.terminate()
        server.join()
    print(
        f"{variant:6} busy {args.busy} ({args.busy * SPIN_SECONDS * 1000:.1f} ms of callbacks per iteration), "
        f"{args.servers} server(s): {args.calls} calls in {total:.2f} s = {args.calls / total:.0f}/s, "
        f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        + (f", {iterations / args.calls:.1f} it/call" if args.busy else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=0, help="~20 us callbacks in every loop iteration")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--variants", default="loop", help="comma-separated: loop, thread")
    args = parser.parse_args()
    for variant in args.variants.split(","):
        if variant not in ("loop", "thread"):
            parser.error(f"unknown variant {variant!r}: use loop or thread")
        measure(args, variant)


if __name__ == "__main__":
    main()
