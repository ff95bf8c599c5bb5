"""How many unary calls a ``grpc.aio`` server answers per second while its event loop is busy.

At 10,000 replicas on 1,000 hollow nodes the agents' heartbeats and status reports timed out
after 5 s although neither the leader's loop nor the fleet's stalled for more than ~1.4 s: the
leader's loop was merely busy (many short callbacks in every iteration). This bench isolates
that: a server process answers an echo method while ``--busy`` callbacks of ~20 us each run in
every loop iteration (re-scheduled with ``call_soon``), and a client process sends ``--calls``
concurrent calls over ``--channels`` connections; it prints the calls per second and the
latencies. ``--servers`` starts that many servers on the port (SO_REUSEPORT).

    .venv/bin/python bench/bench_grpc_intake.py --busy 0
    .venv/bin/python bench/bench_grpc_intake.py --busy 50
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

import grpc

SPIN_SECONDS = 20e-6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def serve(port: int, busy: int, servers: int, seconds: float) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        return request

    handler = grpc.method_handlers_generic_handler("t.T", {"E": grpc.unary_unary_rpc_method_handler(echo)})
    for _ in range(servers):
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
    loop = asyncio.get_running_loop()

    def spin() -> None:  # one short callback, again in the next iteration
        began = time.perf_counter()
        while time.perf_counter() - began < SPIN_SECONDS:
            pass
        loop.call_soon(spin)

    for _ in range(busy):
        loop.call_soon(spin)
    await asyncio.sleep(seconds)


def run_server(port: int, busy: int, servers: int, seconds: float) -> None:
    asyncio.run(serve(port, busy, servers, seconds))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=0, help="~20 us callbacks in every loop iteration")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--servers", type=int, default=1)
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.Process(
        target=run_server, args=(port, args.busy, args.servers, 120.0), daemon=True
    )
    server.start()
    time.sleep(2)
    try:
        total, latencies = asyncio.run(client(port, args.calls, args.channels))
    finally:
        server.terminate()
        server.join()
    print(
        f"busy {args.busy} ({args.busy * SPIN_SECONDS * 1000:.1f} ms of callbacks per iteration), "
        f"{args.servers} server(s): {args.calls} calls in {total:.2f} s = {args.calls / total:.0f}/s, "
        f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
