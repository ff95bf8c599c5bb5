"""The client's CPU per unary call through shoal's gRPC transport, as a hollow process pays it
(issue 18): every status report and heartbeat of an agent is one such call.

A server (the ``grpc`` transport answering an echo, mutual TLS) runs in a process of its own;
this process holds ``clients`` transport providers (one per node, as ``shoal hollow`` does, each
with its own certificate and channel) making ``calls`` calls each, all clients at once, and
prints its own CPU time per call; then the same with a bare ``grpc.aio`` channel, one call at a
time, to tell the transport's wrapper from gRPC itself. Light: no lock needed, but give the
load average with every figure.

    .venv/bin/python bench/bench_grpc_client_cpu.py 1 500
    .venv/bin/python bench/bench_grpc_client_cpu.py 100 20
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from multiprocessing.queues import Queue

import grpc
from shoal.roles.transport import TLSMaterial
from shoal.testing.transport import ECHO, ClusterPKI, TestService
from shoal_transport_grpc import GrpcTransport

ROUNDS = 3


def serve(server_tls: TLSMaterial, address: Queue[str]) -> None:
    async def run() -> None:
        server = await GrpcTransport().serve("127.0.0.1:0", server_tls, TestService().unary(), {})
        address.put(server.address)
        await asyncio.Event().wait()

    asyncio.run(run())


async def through_the_transport(target: str, tls: list[TLSMaterial], calls: int, payload: bytes) -> None:
    providers = [GrpcTransport() for _ in tls]
    for provider, material in zip(providers, tls, strict=True):
        await provider.call(target, ECHO, b"warm", tls=material, timeout=30)

    async def client(provider: GrpcTransport, material: TLSMaterial) -> None:
        for _ in range(calls):
            await provider.call(target, ECHO, payload, tls=material, timeout=30)

    for _ in range(ROUNDS):
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(*(client(p, m) for p, m in zip(providers, tls, strict=True)))
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        total = calls * len(providers)
        print(
            f"transport, {len(providers)} clients x {calls} calls ({len(payload)} B): "
            f"{1e6 * cpu / total:.0f} us of the client's CPU per call, {total / wall:.0f} calls/s, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    for provider in providers:
        await provider.close()


async def bare(target: str, tls: TLSMaterial, calls: int, payload: bytes) -> None:
    credentials = grpc.ssl_channel_credentials(tls.root_pem, tls.key_pem, tls.cert_pem)
    options = [("grpc.ssl_target_name_override", "swarm-manager")]
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        echo = channel.unary_unary(ECHO)  # type: ignore[call-arg]
        await echo(b"warm", timeout=30)
        for _ in range(ROUNDS):
            cpu = time.process_time()
            for _ in range(calls):
                await echo(payload, timeout=30)
            print(
                f"bare grpc.aio, 1 channel, one call at a time: {1e6 * (time.process_time() - cpu) / calls:.0f} us per call"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("clients", type=int)
    parser.add_argument("calls", type=int, help="calls per client")
    parser.add_argument("--payload", type=int, default=200, help="request size in bytes")
    args = parser.parse_args()
    pki = ClusterPKI()
    address: Queue[str] = multiprocessing.Queue()
    server = multiprocessing.Process(
        target=serve, args=(pki.node("m1", "swarm-manager"), address), daemon=True
    )
    server.start()
    try:
        target = address.get(timeout=30)
        tls = [pki.node(f"w{index}", "swarm-worker") for index in range(args.clients)]
        payload = b"x" * args.payload
        asyncio.run(through_the_transport(target, tls, args.calls, payload))
        asyncio.run(bare(target, tls[0], max(args.calls * args.clients, 100), payload))
    finally:
        server.terminate()
        server.join(10)


if __name__ == "__main__":
    main()
