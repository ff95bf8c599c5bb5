"""The cfssl CA against a real ``cfssl serve``: the conformance suite, mutual TLS, refusals,
failover between URLs, unreachable CAs and the response size cap."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from shoal import identity
from shoal.roles import PluginContext
from shoal.roles.ca import ExternalCA, RootMaterial
from shoal.roles.transport import TLSMaterial
from shoal.testing.ca import CAConformance
from shoal_ca_cfssl import CfsslCA
from shoal_ca_cfssl.client import MAX_RESPONSE_BYTES
from shoal_ca_cfssl.testing import CfsslServer, free_port

NODE = "3k9cx2r6ljqa1mz0f7ydpbw5e"
CLUSTER = "0c8qz1w2e3r4t5y6u7i8o9p0a"


def client_tls(server: CfsslServer, name: str = "manager-client") -> TLSMaterial:
    """A client certificate issued out of band by cfssl itself (``cfssl gencert``)."""
    cert, key = server.issue(name, name)
    return TLSMaterial(
        root_pem=server.ca_cert.read_bytes(), cert_pem=cert.read_bytes(), key_pem=key.read_bytes()
    )


def make_ca(tmp_path: Path, tls: TLSMaterial | None, state: str = "ca-state") -> CfsslCA:
    return CfsslCA(state_dir=tmp_path / state, node_tls=lambda: tls)


def external(server: CfsslServer, url: str = "", **options: str) -> ExternalCA:
    return ExternalCA(
        protocol="cfssl", url=url or server.url, cacert_pem=server.ca_cert.read_bytes(), options=dict(options)
    )


async def ready_ca(tmp_path: Path, server: CfsslServer, *cas: ExternalCA) -> tuple[CfsslCA, RootMaterial]:
    ca = make_ca(tmp_path, client_tls(server))
    await ca.configure(list(cas) or [external(server)])
    root = await ca.create_root()
    await ca.load_root(root)
    return ca, root


async def sign(ca: CfsslCA, role: str = "swarm-worker", csr: bytes | None = None) -> bytes:
    issued = await ca.sign(
        csr or identity.build_csr(identity.generate_key(), "ignored"),
        node_id=NODE,
        role=role,
        cluster_id=CLUSTER,
        expiry_seconds=3600,
    )
    return issued.cert_pem


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def dead_url() -> str:
    """An https URL on a port nobody listens on."""
    return f"https://127.0.0.1:{free_port()}/api/v1/cfssl/sign"


# --------------------------------------------------------------------------- conformance


class TestCfsslConformance(CAConformance):
    """The suite every CA passes, here with certificates signed by a real cfssl."""

    honours_expiry: ClassVar[bool] = False  # cfssl's signing profile decides

    @pytest.fixture
    async def ca(self, cfssl_server: CfsslServer, tmp_path: Path) -> AsyncIterator[CfsslCA]:
        provider = make_ca(tmp_path, client_tls(cfssl_server))
        await provider.configure([external(cfssl_server)])
        yield provider


# --------------------------------------------------------------------------- signing


@pytest.mark.parametrize("role", ["swarm-manager", "swarm-worker"])
async def test_signed_by_cfssl_with_the_subject_asked_for(
    cfssl_server: CfsslServer, tmp_path: Path, role: str
) -> None:
    ca, root = await ready_ca(tmp_path, cfssl_server)
    assert root.cert_pem == cfssl_server.ca_cert.read_bytes() and root.key_pem == b""
    cert = x509.load_pem_x509_certificate(await sign(ca, role))
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {
        NameOID.COMMON_NAME: NODE,
        NameOID.ORGANIZATIONAL_UNIT_NAME: role,
        NameOID.ORGANIZATION_NAME: CLUSTER,
    }
    cfssl_ca = x509.load_pem_x509_certificate(cfssl_server.ca_cert.read_bytes())
    cert.verify_directly_issued_by(cfssl_ca)  # signed by cfssl's key
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    expected = [role, NODE] + (["swarm-ca"] if role == "swarm-manager" else [])
    assert sans.get_values_for_type(x509.DNSName) == expected
    assert "signature request received" in cfssl_server.log_text()


async def test_root_from_the_info_endpoint_when_no_cacert(cfssl_server: CfsslServer, tmp_path: Path) -> None:
    # Without cacert= the root comes from cfssl's info endpoint. cfssl's TLS certificate is
    # not in the system store here, so the first call must fail on verification, naming it.
    ca = make_ca(tmp_path, client_tls(cfssl_server))
    await ca.configure([ExternalCA(protocol="cfssl", url=cfssl_server.url)])
    with pytest.raises(RuntimeError, match=f"external CA {cfssl_server.url}: .*CERTIFICATE_VERIFY_FAILED"):
        await ca.create_root()


async def test_root_from_info_with_trusted_server(
    cfssl_server: CfsslServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system store trusting cfssl's CA (SSL_CERT_FILE): the info certificate becomes the root.
    monkeypatch.setenv("SSL_CERT_FILE", str(cfssl_server.ca_cert))
    ca = make_ca(tmp_path, client_tls(cfssl_server))
    await ca.configure([ExternalCA(protocol="cfssl", url=cfssl_server.url)])
    root = await ca.create_root()
    assert identity.load_certificate(root.cert_pem) == identity.load_certificate(
        cfssl_server.ca_cert.read_bytes()
    )
    await ca.load_root(root)
    identity.verify_chain(await sign(ca), root.cert_pem)


async def test_client_without_certificate_is_refused_by_cfssl(
    cfssl_server: CfsslServer, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, None)
    await ca.configure([external(cfssl_server)])
    await ca.load_root(RootMaterial(cfssl_server.ca_cert.read_bytes()))
    with pytest.raises(RuntimeError) as refused:
        await sign(ca)
    message = str(refused.value)
    assert message.startswith(f"external CA unreachable: {cfssl_server.url}: ")
    assert "--bootstrap-cert" in message
    # cfssl's TLS layer turned the client away (the reason the client sees varies with timing:
    # "certificate required" alert or a closed connection; cfssl's log says why).
    wait_for(lambda: "didn't provide a certificate" in cfssl_server.log_text(), "cfssl to log the refusal")
    # The refusal is cfssl's TLS layer, not this plugin: a plain httpx client without a
    # certificate is turned away too, while one with a cfssl-issued certificate gets in.
    trust = ssl.create_default_context(cafile=str(cfssl_server.ca_cert))
    # Under TLS 1.3 the server checks the client's certificate after the client's handshake has
    # finished, so its alert can arrive on the first read, where httpcore lets the raw
    # ssl.SSLError through instead of wrapping it in httpx's ConnectError.
    async with httpx.AsyncClient(verify=trust) as plain:
        with pytest.raises((httpx.HTTPError, ssl.SSLError)):
            await plain.post(f"{cfssl_server.base_url}/api/v1/cfssl/info", json={})
    assert await make_configured_health(tmp_path, cfssl_server) == ""


async def make_configured_health(tmp_path: Path, server: CfsslServer) -> str:
    ca = make_ca(tmp_path, client_tls(server, "health-client"), state="health-state")
    await ca.configure([external(server)])
    return await ca.health()


async def test_client_certificate_from_another_ca_is_refused(
    cfssl_server: CfsslServer, tmp_path: Path
) -> None:
    other = CfsslServer(tmp_path / "other-ca")  # never started: only its CA is used
    ca = make_ca(tmp_path, client_tls(other, "stranger"))
    await ca.configure([external(cfssl_server)])
    with pytest.raises(RuntimeError, match="external CA unreachable"):
        await sign(ca)
    assert (await ca.health()).startswith(f"external CA {cfssl_server.url}: ")


async def test_client_certificate_follows_renewals(cfssl_server: CfsslServer, tmp_path: Path) -> None:
    # node_tls() is asked on every call: a renewed (or revoked) identity is used at once.
    stranger = client_tls(CfsslServer(tmp_path / "other-ca"), "stranger")
    tls: list[TLSMaterial | None] = [client_tls(cfssl_server, "first")]
    ca = CfsslCA(state_dir=tmp_path / "state", node_tls=lambda: tls[0])
    await ca.configure([external(cfssl_server)])
    await ca.load_root(RootMaterial(cfssl_server.ca_cert.read_bytes()))
    await sign(ca)
    tls[0] = stranger
    with pytest.raises(RuntimeError, match="external CA unreachable"):
        await sign(ca)
    tls[0] = client_tls(cfssl_server, "second")
    await sign(ca)
    # The key was written for ssl only for the time of loading it: nothing is left on disk.
    assert list((tmp_path / "state" / "client-tls").iterdir()) == []


# --------------------------------------------------------------------------- refusals


async def test_cfssl_refusal_carries_its_message(cfssl_server: CfsslServer, tmp_path: Path) -> None:
    ca, _ = await ready_ca(tmp_path, cfssl_server, external(cfssl_server, profile="refuse"))
    with pytest.raises(RuntimeError) as refused:
        await sign(ca)
    assert str(refused.value) == (
        f"external CA {cfssl_server.url} refused: Request does not match policy whitelist (code 5500)"
    )


async def test_cfssl_refuses_a_csr_it_cannot_decode(cfssl_server: CfsslServer, tmp_path: Path) -> None:
    # The plugin checks CSRs itself (ValueError, nothing sent); cfssl's own refusal of a CSR
    # is shown when it gets one anyway, through the JSON answer.
    from shoal_ca_cfssl import client

    ca, _ = await ready_ca(tmp_path, cfssl_server)
    with pytest.raises(ValueError, match="invalid CSR"):
        await sign(ca, csr=b"garbage")
    raw = client_tls(cfssl_server, "raw")
    context = client.ssl_context(
        cfssl_server.ca_cert.read_bytes(), client.ClientIdentity(raw.cert_pem, raw.key_pem), tmp_path / "raw"
    )
    with pytest.raises(client.Refused, match=r"CSR Decode failed \(code 9002\)"):
        await client.post_json(cfssl_server.url, {"certificate_request": "garbage"}, context)


async def test_wrong_subject_from_the_ca_is_refused(cfssl_server: CfsslServer, tmp_path: Path) -> None:
    # A CA that signs but not what was asked (here: another cluster's certificate answer).
    from shoal_ca_cfssl import request

    csr_pem = identity.build_csr(identity.generate_key())
    csr = x509.load_pem_x509_csr(csr_pem)
    ca, root = await ready_ca(tmp_path, cfssl_server)
    other = await ca.sign(csr_pem, node_id=NODE, role="swarm-worker", cluster_id="another", expiry_seconds=60)
    with pytest.raises(ValueError, match="O=another, not CN=.*O=" + CLUSTER):
        request.check_issued(
            {"certificate": other.cert_pem.decode()},
            csr,
            node_id=NODE,
            role="swarm-worker",
            cluster_id=CLUSTER,
            root_pem=root.cert_pem,
        )
    with pytest.raises(ValueError, match="not for the key of the CSR"):
        request.check_issued(
            {"certificate": other.cert_pem.decode()},
            x509.load_pem_x509_csr(identity.build_csr(identity.generate_key())),
            node_id=NODE,
            role="swarm-worker",
            cluster_id="another",
            root_pem=root.cert_pem,
        )


async def test_configure_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, None)
    with pytest.raises(ValueError, match="needs an external CA"):
        await ca.configure([])
    with pytest.raises(ValueError, match='protocol "acme" is not supported'):
        await ca.configure([ExternalCA(protocol="acme", url="https://ca.example/sign")])
    with pytest.raises(ValueError, match="must be https://"):
        await ca.configure([ExternalCA(protocol="cfssl", url="http://ca.example/sign")])
    with pytest.raises(ValueError, match="cacert"):
        await ca.configure([ExternalCA(protocol="cfssl", url="https://ca.example/sign", cacert_pem=b"junk")])
    with pytest.raises(RuntimeError, match="no external CA configured"):
        await ca.create_root()
    assert "no external CA configured" in await ca.health()


# --------------------------------------------------------------------------- availability


async def test_next_url_when_the_first_is_down(cfssl_server: CfsslServer, tmp_path: Path) -> None:
    down = dead_url()
    ca, root = await ready_ca(tmp_path, cfssl_server, external(cfssl_server, down), external(cfssl_server))
    identity.verify_chain(await sign(ca), root.cert_pem)
    assert (await ca.health()).startswith(f"external CA {down}: ")


async def test_all_down_names_every_url(cfssl_server: CfsslServer, tmp_path: Path) -> None:
    first, second = dead_url(), dead_url()
    ca, _ = await ready_ca(
        tmp_path, cfssl_server, external(cfssl_server, first), external(cfssl_server, second)
    )
    with pytest.raises(RuntimeError) as unreachable:
        await sign(ca)
    message = str(unreachable.value)
    assert message.startswith(f"external CA unreachable: {first}: ")
    assert f"; {second}: " in message
    assert "onnect" in message  # "Connection refused"/"connect error": the reason, not a traceback
    assert "\n" not in message


async def test_stopped_then_restarted(cfssl_server: CfsslServer, tmp_path: Path) -> None:
    ca, root = await ready_ca(tmp_path, cfssl_server)
    cfssl_server.stop()
    with pytest.raises(RuntimeError, match=f"external CA unreachable: {cfssl_server.url}"):
        await sign(ca)
    assert await ca.health() != ""
    cfssl_server.start()
    identity.verify_chain(await sign(ca), root.cert_pem)
    assert await ca.health() == ""


# --------------------------------------------------------------------------- hostile servers


class _Huge(BaseHTTPRequestHandler):
    """Answers every POST with more JSON than the plugin accepts, or never answers."""

    mode: ClassVar[str] = "huge"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        if _Huge.mode == "slow":
            threading.Event().wait(8)
            return
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if _Huge.mode == "huge-declared":
            self.send_header("content-length", str(MAX_RESPONSE_BYTES * 4))
        self.end_headers()
        try:
            self.wfile.write(b'{"success": true, "result": {"certificate": "')
            for _ in range(4 * MAX_RESPONSE_BYTES // 65536):
                self.wfile.write(b"A" * 65536)
        except OSError:
            pass  # the client hung up: what it should do

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hostile(cfssl_server: CfsslServer) -> Iterator[str]:
    """A tiny HTTPS server with cfssl's server certificate, misbehaving on purpose."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Huge)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cfssl_server.server_cert, cfssl_server.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/api/v1/cfssl/sign"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.mark.parametrize("mode", ["huge", "huge-declared"])
async def test_response_size_is_capped(
    cfssl_server: CfsslServer, tmp_path: Path, hostile: str, mode: str
) -> None:
    _Huge.mode = mode
    ca, root = await ready_ca(tmp_path, cfssl_server, external(cfssl_server, hostile), external(cfssl_server))
    # The oversized answer is dropped and the next URL signs.
    identity.verify_chain(await sign(ca), root.cert_pem)
    ca_only_hostile = make_ca(tmp_path, client_tls(cfssl_server, "h"), state="hostile-state")
    await ca_only_hostile.configure([external(cfssl_server, hostile)])
    await ca_only_hostile.load_root(root)
    with pytest.raises(RuntimeError, match=f"{MAX_RESPONSE_BYTES} bytes allowed"):
        await sign(ca_only_hostile)


async def test_timeout_per_url(cfssl_server: CfsslServer, tmp_path: Path, hostile: str) -> None:
    _Huge.mode = "slow"
    ca, root = await ready_ca(tmp_path, cfssl_server, external(cfssl_server, hostile), external(cfssl_server))
    started = asyncio.get_running_loop().time()
    identity.verify_chain(await sign(ca), root.cert_pem)
    elapsed = asyncio.get_running_loop().time() - started
    assert 4.5 < elapsed < 7.5, elapsed  # 5 s on the silent URL, then the next one


# --------------------------------------------------------------------------- packaging


def test_entry_point_builds_the_provider(tmp_path: Path) -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="shoal.ca") if e.name == "cfssl"]
    module = ep.load()
    assert module.PROVIDER_CLASS is CfsslCA
    assert (module.PROVIDER_CLASS.role, module.PROVIDER_CLASS.api_version) == ("ca", 2)
    provider = module.shoal_ca_provider(context=PluginContext(role="ca", name="cfssl", state_dir=tmp_path))
    assert isinstance(provider, CfsslCA)
