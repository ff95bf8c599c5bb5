"""How many calls shoal's gRPC server takes in while its event loop is busy, and how late a heartbeat is.

At 100,000 replicas on 1,000 hollow nodes the leader's loop is busy (many callbacks in every
iteration), and ``grpc.aio`` takes calls in through a few turns of that loop each, one call
after another per intake (``shoal_transport_grpc.intake``): heartbeats queued past their 5 s
deadline and the sessions fell. This bench isolates that, with the real transport plugin and
mutual TLS (certificates from ``shoal.testing.transport.ClusterPKI``):

- a server process serves four methods (a heartbeat, a task status report, a control call, a
  Raft step; each answers its request at once) while ``--callbacks`` callbacks of
  ``--spin-ms`` each run in every iteration of its loop (as a leader's loop runs its work);
- ``--processes`` client processes each run ``--nodes`` nodes (a certificate and a connection
  each, as hollow nodes have): every node keeps ``--inflight`` calls of the three other methods
  going one after another, and sends a heartbeat every ``--heartbeat-period`` seconds, with a
  5 s deadline as the agent's.

It prints, per variant of the server, the calls taken in per second (all methods), the
heartbeats' latency (p50, p99, max) and how many missed their 5 s deadline, and the busy
loop's iterations per call. Variants:

- ``generic``: every method behind one generic handler, one intake for all (the transport
  before issue 18's change, ``intake="generic"``);
- ``registered``: each method registered, an intake each (the default);
- ``thread`` / ``thread-generic``: the server on a loop of its own (``transport.serving-thread=on``),
  registered or generic, the handlers still on the busy loop.

    .venv/bin/python bench/bench_grpc_intake.py --variants generic,registered,thread
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import time
from typing import Any

from shoal.plugin import PeerIdentity, RPCError, StatusCode, TLSMaterial
from shoal.rpc import CONTROL, HEARTBEAT, UPDATE_TASK_STATUS
from shoal.testing.transport import ClusterPKI
from shoal_transport_grpc import GrpcTransport
from shoal_transport_grpc.server import GrpcServer

RAFT_STEP = "/shoal.StorePeer/RaftStep"
OTHERS = (UPDATE_TASK_STATUS, CONTROL, RAFT_STEP)
HEARTBEAT_DEADLINE = 5.0
VARIANTS = {
    "generic": (False, "generic"),
    "registered": (False, "registered"),
    "thread": (True, "registered"),
    "thread-generic": (True, "generic"),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def serve(
    port: int, tls: TLSMaterial, variant: str, args: argparse.Namespace, spins: Any, ready: Any, end: Any
) -> None:
    loop = asyncio.get_running_loop()
    if args.switch_ms:
        sys.setswitchinterval(args.switch_ms / 1000)

    async def answer(request: bytes, peer: PeerIdentity | None) -> bytes:
        return request

    own_loop, how = VARIANTS[variant]
    methods = dict.fromkeys((HEARTBEAT, *OTHERS), answer)
    server = await GrpcServer.start(f"127.0.0.1:{port}", tls, methods, {}, own_loop=own_loop, intake=how)  # type: ignore[arg-type]
    spin_seconds = args.spin_ms / 1000

    def spin() -> None:  # one callback of spin_ms, again in the next iteration
        began = time.perf_counter()
        while time.perf_counter() - began < spin_seconds:
            pass
        spins.value += 1
        loop.call_soon(spin)

    for _ in range(args.callbacks):
        loop.call_soon(spin)
    ready.set()
    await loop.run_in_executor(None, end.wait)
    await server.stop(0)


def run_server(*args: Any) -> None:
    asyncio.run(serve(*args))


async def client(
    port: int, nodes: list[TLSMaterial], args: argparse.Namespace, start_at: float
) -> tuple[int, list[float], int]:
    target = f"127.0.0.1:{port}"
    transports = [GrpcTransport() for _ in nodes]
    for transport, tls in zip(transports, nodes, strict=True):  # connected before the clock starts
        await transport.call(target, HEARTBEAT, b"hello", tls=tls, timeout=60)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    stop_at = time.time() + args.seconds
    done = [0]
    beats: list[float] = []
    missed = [0]

    async def others(transport: GrpcTransport, tls: TLSMaterial, first: int) -> None:
        index = first
        while time.time() < stop_at:
            await transport.call(target, OTHERS[index % len(OTHERS)], b"x" * 200, tls=tls, timeout=60)
            done[0] += 1
            index += 1

    async def heartbeats(transport: GrpcTransport, tls: TLSMaterial, offset: float) -> None:
        await asyncio.sleep(offset)
        while time.time() < stop_at:
            began = time.perf_counter()
            try:
                await transport.call(target, HEARTBEAT, b"beat", tls=tls, timeout=HEARTBEAT_DEADLINE)
                beats.append(time.perf_counter() - began)
                done[0] += 1
            except RPCError as exc:
                if exc.code != StatusCode.DEADLINE_EXCEEDED:
                    raise
                missed[0] += 1
            await asyncio.sleep(max(0.0, args.heartbeat_period - (time.perf_counter() - began)))

    period = args.heartbeat_period
    work = [
        others(transport, tls, n * args.inflight + k)
        for n, (transport, tls) in enumerate(zip(transports, nodes, strict=True))
        for k in range(args.inflight)
    ] + [
        heartbeats(transport, tls, period * n / len(nodes))
        for n, (transport, tls) in enumerate(zip(transports, nodes, strict=True))
    ]
    await asyncio.gather(*work)
    await asyncio.gather(*(transport.close() for transport in transports))
    return done[0], beats, missed[0]


def run_client(
    port: int, nodes: list[TLSMaterial], args: argparse.Namespace, start_at: float, out: Any
) -> None:
    out.put(asyncio.run(client(port, nodes, args, start_at)))


def measure(args: argparse.Namespace, variant: str, pki: ClusterPKI) -> None:
    port = free_port()
    # spawn: a forked child would inherit the parent's gRPC state.
    context = multiprocessing.get_context("spawn")
    spins = context.Value("q", 0, lock=False)
    ready, end, out = context.Event(), context.Event(), context.Queue()
    server = context.Process(
        target=run_server, args=(port, pki.node("mgr-1"), variant, args, spins, ready, end), daemon=True
    )
    server.start()
    if not ready.wait(60):
        raise SystemExit(f"the {variant} server did not start within 60 s")
    start_at = time.time() + 3 + args.nodes * args.processes * 0.02  # every client connected by then
    clients = [
        context.Process(
            target=run_client,
            args=(
                port,
                [pki.node(f"w{p}-{n}", "swarm-worker") for n in range(args.nodes)],
                args,
                start_at,
                out,
            ),
            daemon=True,
        )
        for p in range(args.processes)
    ]
    for process in clients:
        process.start()
    time.sleep(max(0.0, start_at - time.time()))
    before = spins.value
    results = [out.get(timeout=args.seconds + 120) for _ in clients]
    iterations = spins.value - before
    end.set()
    for process in clients:
        process.join()
    server.join(30)
    calls = sum(done for done, _, _ in results)
    beats = sorted(beat for _, latencies, _ in results for beat in latencies)
    missed = sum(lost for _, _, lost in results)

    def at(share: float) -> float:
        return beats[min(len(beats) - 1, int(share * len(beats)))] * 1000 if beats else float("nan")

    print(
        f"{variant:14} {args.callbacks} x {args.spin_ms} ms of callbacks per iteration: "
        f"{calls / args.seconds:.0f} calls/s taken in; heartbeats {len(beats)} answered, "
        f"p50 {at(0.5):.0f} ms, p99 {at(0.99):.0f} ms, max {at(1.0):.0f} ms, {missed} past {HEARTBEAT_DEADLINE:.0f} s; "
        f"{iterations / max(calls, 1) * args.callbacks:.2f} busy callbacks per call",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callbacks", type=int, default=1, help="busy callbacks in every loop iteration")
    parser.add_argument("--spin-ms", type=float, default=1.0, help="how long each busy callback runs")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--nodes", type=int, default=100, help="nodes (connections) per client process")
    parser.add_argument("--inflight", type=int, default=1, help="other calls each node keeps going")
    parser.add_argument("--heartbeat-period", type=float, default=1.0)
    parser.add_argument(
        "--switch-ms", type=float, default=0.0, help="the server's GIL switch interval (default: CPython's)"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--variants", default="generic,registered,thread", help=", ".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}: use {', '.join(VARIANTS)}")
    pki = ClusterPKI(cluster_id="bench-intake")
    for variant in variants:
        measure(args, variant, pki)


if __name__ == "__main__":
    main()
