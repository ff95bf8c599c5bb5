"""Our wrapper must cost little next to gRPC itself.

Measured against a bare grpc.aio server and channel with the same mutual-TLS setup, on the
same loopback, in interleaved rounds (so load from anything else on the machine hits both
alike), comparing medians.
"""

from __future__ import annotations

import statistics
import time

import grpc
from shoal.testing.transport import ECHO, ClusterPKI, TestService
from shoal_transport_grpc import GrpcTransport, anonymous

ROUNDS = 15
CALLS = 100
MAX_OVERHEAD_SECONDS = 0.0005


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def test_round_trip_overhead_is_well_under_a_millisecond() -> None:
    pki = ClusterPKI()
    server_tls, client_tls = pki.node("m"), pki.node("w", "swarm-worker")
    transport = GrpcTransport()
    ours = await transport.serve("127.0.0.1:0", server_tls, TestService().unary(), {})

    raw = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    raw.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("shoal.Test", {"Echo": handler}),))
    credentials = grpc.ssl_server_credentials(
        [(server_tls.key_pem, server_tls.cert_pem)],
        root_certificates=pki.root_pem + anonymous.ca_pem(),
        require_client_auth=True,
    )
    port = raw.add_secure_port("127.0.0.1:0", credentials)
    await raw.start()
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        grpc.ssl_channel_credentials(pki.root_pem, client_tls.key_pem, client_tls.cert_pem),
        options=[("grpc.ssl_target_name_override", "swarm-manager")],
    )
    bare = channel.unary_unary(ECHO)  # type: ignore[call-arg]
    try:
        assert await bare(b"warm", timeout=10) == b"warm"
        assert await transport.call(ours.address, ECHO, b"warm", tls=client_tls, timeout=10) == b"warm"
        base: list[float] = []
        wrapped: list[float] = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for _ in range(CALLS):
                await bare(b"x", timeout=10)
            base.append((time.perf_counter() - start) / CALLS)
            start = time.perf_counter()
            for _ in range(CALLS):
                await transport.call(ours.address, ECHO, b"x", tls=client_tls, timeout=10)
            wrapped.append((time.perf_counter() - start) / CALLS)
        overhead = statistics.median(wrapped) - statistics.median(base)
        print(f"bare {statistics.median(base) * 1e6:.0f}us, ours {statistics.median(wrapped) * 1e6:.0f}us")
        assert overhead < MAX_OVERHEAD_SECONDS, f"overhead {overhead * 1e6:.0f}us per call"
    finally:
        await channel.close()
        await raw.stop(0)
        await ours.stop(0)
        await transport.close()
