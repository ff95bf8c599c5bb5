"""Memory transport specifics: the same TLS decisions as gRPC, server lifecycle, the plugin."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from shoal import identity
from shoal.loader import PluginLoader
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode, TLSMaterial
from shoal.testing.transport import COUNT, ECHO, SLOW, WHO, ClusterPKI, TestService, collect
from shoal_ca_internal import InternalCA
from shoal_transport_memory import NETWORK, MemoryNetwork, MemoryServer, MemoryTransport, plugin

NOW = dt.datetime.now(dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def network() -> MemoryNetwork:
    return MemoryNetwork(seed=7)


@pytest.fixture
async def transport(network: MemoryNetwork) -> AsyncIterator[MemoryTransport]:
    provider = MemoryTransport(network)
    yield provider
    await provider.close()


@pytest.fixture
def pki() -> ClusterPKI:
    return ClusterPKI(cluster_id="cluster-a")


@pytest.fixture
def service() -> TestService:
    return TestService()


@pytest.fixture
async def server(
    transport: MemoryTransport, pki: ClusterPKI, service: TestService
) -> AsyncIterator[MemoryServer]:
    srv = await transport.serve("mgr-1:0", pki.node("mgr-1"), service.unary(), service.streams())
    yield srv
    service.release.set()
    await srv.stop(0)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Let the loop run until ``condition`` holds; fail after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def in_flight(server: MemoryServer) -> Callable[[], bool]:
    return lambda: bool(server._network.links(lambda link: link.server is server))


async def _refused(transport: MemoryTransport, target: str, tls: TLSMaterial) -> RPCError:
    with pytest.raises(RPCError) as caught:
        await transport.call(target, WHO, b"", tls=tls, timeout=10)
    return caught.value


# ---------------------------------------------------------------------------- client certificates


async def test_client_cert_from_another_ca_is_refused_at_handshake(
    transport: MemoryTransport, server: MemoryServer, service: TestService, pki: ClusterPKI
) -> None:
    other = ClusterPKI(cluster_id="cluster-a").node("mgr-9", "swarm-manager")  # same names, other key
    error = await _refused(
        transport, server.address, TLSMaterial(pki.root_pem, other.cert_pem, other.key_pem)
    )
    assert error.code is StatusCode.UNAVAILABLE
    assert error.message.startswith(
        f"cannot reach {server.address}: TLS handshake failed: client certificate"
    )
    assert service.peers == []  # no handler ran


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(NOW - 3 * HOUR, NOW - HOUR), (NOW + HOUR, NOW + 3 * HOUR)],
    ids=["expired", "future"],
)
async def test_out_of_date_client_cert_is_refused(
    transport: MemoryTransport,
    server: MemoryServer,
    service: TestService,
    pki: ClusterPKI,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> None:
    stale = pki.node("wrk-1", "swarm-worker", not_before=not_before, not_after=not_after)
    error = await _refused(transport, server.address, stale)
    assert error.code is StatusCode.UNAVAILABLE
    assert "TLS handshake failed" in error.message
    assert service.peers == []
    fresh = pki.node("wrk-1", "swarm-worker")
    assert (
        await transport.call(server.address, WHO, b"", tls=fresh, timeout=10)
        == b"wrk-1|swarm-worker|cluster-a"
    )


async def test_client_key_must_match_its_certificate(
    transport: MemoryTransport, server: MemoryServer, pki: ClusterPKI
) -> None:
    cert = pki.node("wrk-1", "swarm-worker")
    mismatched = TLSMaterial(pki.root_pem, cert.cert_pem, identity.generate_key())
    error = await _refused(transport, server.address, mismatched)
    assert error.code is StatusCode.UNAVAILABLE
    assert "key does not match" in error.message


async def test_certificate_without_its_key_is_not_presented(
    transport: MemoryTransport, server: MemoryServer, pki: ClusterPKI
) -> None:
    cert = pki.node("wrk-1", "swarm-worker")
    assert (
        await transport.call(
            server.address, WHO, b"", tls=TLSMaterial(pki.root_pem, cert.cert_pem), timeout=10
        )
        == b"anonymous"
    )


# ---------------------------------------------------------------------------- server certificates


async def test_server_cert_from_another_root_fails_naming_tls(
    transport: MemoryTransport, server: MemoryServer, service: TestService
) -> None:
    error = await _refused(transport, server.address, ClusterPKI().node("wrk-2", "swarm-worker"))
    assert error.code is StatusCode.UNAVAILABLE
    assert error.message.startswith(
        f"cannot reach {server.address}: TLS handshake failed: server certificate"
    )
    assert service.peers == []


async def test_worker_certificate_cannot_serve_as_manager(
    network: MemoryNetwork, transport: MemoryTransport, pki: ClusterPKI, service: TestService
) -> None:
    srv = await transport.serve("wrk-3:0", pki.node("wrk-3", "swarm-worker"), service.unary(), {})
    try:
        error = await _refused(transport, srv.address, pki.node("wrk-4", "swarm-worker"))
        assert error.code is StatusCode.UNAVAILABLE
        assert "expected swarm-manager" in error.message
        lenient = MemoryTransport(network, server_name="swarm-worker")
        reply = await lenient.call(srv.address, WHO, b"", tls=pki.node("wrk-4", "swarm-worker"), timeout=10)
        assert reply == b"wrk-4|swarm-worker|cluster-a"
    finally:
        await srv.stop(0)


async def test_trust_on_first_use(
    transport: MemoryTransport, server: MemoryServer, service: TestService
) -> None:
    assert (
        await transport.call(server.address, WHO, b"", tls=TLSMaterial(root_pem=b""), timeout=10)
        == b"anonymous"
    )
    assert service.peers == [None]


async def test_root_rotation_and_renewal_leave_open_streams_alone(
    transport: MemoryTransport, network: MemoryNetwork, pki: ClusterPKI, service: TestService
) -> None:
    gate = asyncio.Event()

    async def held(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        yield b"first"
        await gate.wait()
        yield b"second"

    srv = await transport.serve("mgr-1:0", pki.node("mgr-1"), service.unary(), {"/shoal.Test/Held": held})
    try:
        stream = transport.stream(
            srv.address, "/shoal.Test/Held", b"", tls=pki.node("w", "swarm-worker"), timeout=30
        )
        assert await anext(stream) == b"first"
        new_pki = ClusterPKI(cluster_id="cluster-a", root_cn="swarm-ca-2")
        renewed = new_pki.node("mgr-1")
        bundle = pki.root_pem + new_pki.root_pem
        srv.update_tls(TLSMaterial(root_pem=bundle, cert_pem=renewed.cert_pem, key_pem=renewed.key_pem))
        other = MemoryTransport(network)
        assert (
            await other.call(srv.address, WHO, b"", tls=new_pki.node("wrk-2", "swarm-worker"), timeout=10)
            == b"wrk-2|swarm-worker|cluster-a"
        )
        assert "TLS" in (await _refused(other, srv.address, pki.node("wrk-3", "swarm-worker"))).message
        old = pki.node("wrk-4", "swarm-worker")
        both = TLSMaterial(root_pem=bundle, cert_pem=old.cert_pem, key_pem=old.key_pem)
        assert (
            await other.call(srv.address, WHO, b"", tls=both, timeout=10) == b"wrk-4|swarm-worker|cluster-a"
        )
        gate.set()
        assert await anext(stream) == b"second"
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    finally:
        gate.set()
        await srv.stop(0)


async def test_internal_ca_certificates_carry_identity(transport: MemoryTransport) -> None:
    """The path a node takes: kernel key and CSR, the internal CA plugin signs, the peer is known."""
    ca = InternalCA()
    root = await ca.create_root()

    async def node(node_id: str, role: str) -> TLSMaterial:
        key = identity.generate_key()
        issued = await ca.sign(
            identity.build_csr(key), node_id=node_id, role=role, cluster_id="clu-1", expiry_seconds=3600
        )
        return TLSMaterial(root_pem=root.cert_pem, cert_pem=issued.cert_pem, key_pem=key)

    async def who(request: bytes, peer: PeerIdentity | None) -> bytes:
        if peer is None or peer.role != "swarm-manager":
            raise RPCError(StatusCode.PERMISSION_DENIED, "manager certificate required")
        return peer.node_id.encode()

    srv = await transport.serve(
        "mgr-a:2377", await node("mgr-a", "swarm-manager"), {"/shoal.Ctl/Who": who}, {}
    )
    try:
        manager = await node("mgr-b", "swarm-manager")
        assert await transport.call(srv.address, "/shoal.Ctl/Who", b"", tls=manager, timeout=10) == b"mgr-b"
        with pytest.raises(RPCError) as caught:
            await transport.call(
                srv.address, "/shoal.Ctl/Who", b"", tls=await node("wrk-c", "swarm-worker"), timeout=10
            )
        assert caught.value.code is StatusCode.PERMISSION_DENIED
    finally:
        await srv.stop(0)


# ---------------------------------------------------------------------------- addresses and server lifecycle


async def test_bind_errors_name_the_address(
    transport: MemoryTransport, server: MemoryServer, pki: ClusterPKI, service: TestService
) -> None:
    with pytest.raises(OSError, match=f"cannot listen on {server.address}: address in use"):
        await transport.serve(server.address, pki.node("mgr-2"), service.unary(), {})


async def test_fresh_ports_are_unique_and_not_reused(transport: MemoryTransport, pki: ClusterPKI) -> None:
    tls = pki.node("m")
    first = await transport.serve("h:0", tls, {}, {})
    await first.stop(0)
    second = await transport.serve("h:0", tls, {}, {})
    try:
        assert first.address != second.address
    finally:
        await second.stop(0)


@pytest.mark.parametrize("address", ["nowhere", "127.0.0.1:http", ":50", "h:70000"])
async def test_bad_listen_address(transport: MemoryTransport, pki: ClusterPKI, address: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address"):
        await transport.serve(address, pki.node("m"), {}, {})


async def test_server_needs_certificate_and_matching_key(transport: MemoryTransport, pki: ClusterPKI) -> None:
    with pytest.raises(ValueError, match="needs a certificate"):
        await transport.serve("h:0", pki.anonymous(), {}, {})
    cert = pki.node("m")
    with pytest.raises(ValueError, match="key does not match"):
        await transport.serve(
            "h:0", TLSMaterial(pki.root_pem, cert.cert_pem, identity.generate_key()), {}, {}
        )


async def test_handler_bug_is_internal_and_names_the_method(
    transport: MemoryTransport, pki: ClusterPKI
) -> None:
    async def broken(request: bytes, peer: PeerIdentity | None) -> bytes:
        raise KeyError("missing")

    async def not_bytes(request: bytes, peer: PeerIdentity | None) -> bytes:
        return "text"  # type: ignore[return-value]

    async def ok_is_no_error(request: bytes, peer: PeerIdentity | None) -> bytes:
        raise RPCError(StatusCode.OK, "odd")

    srv = await transport.serve(
        "h:0", pki.node("m"), {"/T/Broken": broken, "/T/Text": not_bytes, "/T/Ok": ok_is_no_error}, {}
    )
    tls = pki.node("w", "swarm-worker")
    try:
        with pytest.raises(RPCError) as caught:
            await transport.call(srv.address, "/T/Broken", b"", tls=tls, timeout=10)
        assert (caught.value.code, caught.value.message) == (
            StatusCode.INTERNAL,
            "/T/Broken: KeyError: 'missing'",
        )
        with pytest.raises(RPCError) as caught:
            await transport.call(srv.address, "/T/Text", b"", tls=tls, timeout=10)
        assert caught.value.code is StatusCode.INTERNAL
        assert "str, not bytes" in caught.value.message
        with pytest.raises(RPCError) as caught:
            await transport.call(srv.address, "/T/Ok", b"", tls=tls, timeout=10)
        assert caught.value.code is StatusCode.UNKNOWN
    finally:
        await srv.stop(0)


async def test_deadline_cancels_the_handler(transport: MemoryTransport, pki: ClusterPKI) -> None:
    cancelled = asyncio.Event()

    async def stuck(request: bytes, peer: PeerIdentity | None) -> bytes:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    srv = await transport.serve("h:0", pki.node("m"), {"/T/Stuck": stuck}, {})
    try:
        with pytest.raises(RPCError) as caught:
            await transport.call(
                srv.address, "/T/Stuck", b"", tls=pki.node("w", "swarm-worker"), timeout=0.05
            )
        assert caught.value.code is StatusCode.DEADLINE_EXCEEDED
        assert caught.value.message == f"/T/Stuck on {srv.address} timed out after 0.05s"
        await asyncio.wait_for(cancelled.wait(), 5)
    finally:
        await srv.stop(0)


async def test_stop_gives_calls_in_flight_their_grace(
    transport: MemoryTransport, server: MemoryServer, service: TestService, pki: ClusterPKI
) -> None:
    tls = pki.node("w", "swarm-worker")
    finishing = asyncio.create_task(transport.call(server.address, SLOW, b"done", tls=tls, timeout=10))
    await until(in_flight(server))
    stopping = asyncio.create_task(server.stop(10))
    await until(lambda: transport.network.lookup(server.address) is None)
    error = await _refused(transport, server.address, tls)  # already refusing new calls
    assert "connection refused" in error.message
    service.release.set()
    assert await finishing == b"done"
    await stopping


async def test_stop_without_grace_cuts_calls_and_streams(
    transport: MemoryTransport, server: MemoryServer, pki: ClusterPKI
) -> None:
    tls = pki.node("w", "swarm-worker")
    slow = asyncio.create_task(transport.call(server.address, SLOW, b"x", tls=tls, timeout=10))
    await until(in_flight(server))
    stream = transport.stream(server.address, COUNT, b"100000", tls=tls, timeout=10)
    assert (await anext(stream)).endswith(b"#0")
    await server.stop(0)
    with pytest.raises(RPCError) as caught:
        await slow
    assert (caught.value.code, caught.value.message) == (
        StatusCode.UNAVAILABLE,
        f"cannot reach {server.address}: server stopped",
    )
    with pytest.raises(RPCError) as caught:
        await collect(stream)
    assert caught.value.code is StatusCode.UNAVAILABLE


async def test_stream_consumer_stopping_early_closes_the_handler(
    transport: MemoryTransport, pki: ClusterPKI
) -> None:
    closed = asyncio.Event()

    async def endless(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick"
        finally:
            closed.set()

    srv = await transport.serve("h:0", pki.node("m"), {}, {"/T/Endless": endless})
    try:
        stream = transport.stream(srv.address, "/T/Endless", b"", tls=pki.node("w", "swarm-worker"))
        assert await anext(stream) == b"tick"
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(closed.wait(), 5)
        assert transport.network.links(lambda link: True) == []
    finally:
        await srv.stop(0)


async def test_close_cancels_calls_in_flight(
    transport: MemoryTransport, server: MemoryServer, pki: ClusterPKI
) -> None:
    pending = asyncio.create_task(
        transport.call(server.address, SLOW, b"x", tls=pki.node("w", "swarm-worker"), timeout=10)
    )
    await until(in_flight(server))
    await transport.close()
    with pytest.raises(RPCError) as caught:
        await pending
    assert caught.value.code is StatusCode.CANCELLED


async def test_handlers_do_not_see_the_callers_context(transport: MemoryTransport, pki: ClusterPKI) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")

    async def read(request: bytes, peer: PeerIdentity | None) -> bytes:
        return var.get().encode()

    srv = await transport.serve("h:0", pki.node("m"), {"/T/Read": read}, {})
    try:
        var.set("caller-side")
        assert (
            await transport.call(srv.address, "/T/Read", b"", tls=pki.node("w", "swarm-worker"), timeout=10)
            == b"unset"
        )
    finally:
        await srv.stop(0)


async def test_messages_over_the_grpc_limit_fail(
    transport: MemoryTransport, server: MemoryServer, pki: ClusterPKI
) -> None:
    with pytest.raises(RPCError) as caught:
        await transport.call(
            server.address, ECHO, bytes(128 << 20 | 1), tls=pki.node("w", "swarm-worker"), timeout=10
        )
    assert caught.value.code is StatusCode.UNKNOWN
    assert caught.value.message.startswith("RESOURCE_EXHAUSTED")


# ---------------------------------------------------------------------------- the plugin


def test_loader_builds_the_provider_with_options(tmp_path: Path) -> None:
    loader = PluginLoader({"transport": "memory"}, {"transport": {"server_name": "x", "name": "cli"}})
    provider = loader.provider("transport", loader.make_context("transport", tmp_path / "state"))
    assert isinstance(provider, MemoryTransport)
    assert provider.network is NETWORK
    assert provider._caller._handshaker.server_name == "x"
    assert provider.addresses() == frozenset({"cli"})
    assert plugin.PROVIDER_CLASS is MemoryTransport
