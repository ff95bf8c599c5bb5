"""Conformance suite for CA providers.

Use it from your plugin's tests::

    import pytest
    from shoal.testing.ca import CAConformance

    class TestMyCA(CAConformance):
        @pytest.fixture
        async def ca(self):
            provider = MyCA(...)
            yield provider
            # clean up here

By default the suite makes the root with ``create_root()`` and adopts it with ``load_root()``
(fixture ``ca_root``); override ``ca_root`` if your CA gets its root another way. A CA whose
certificate lifetime is set elsewhere (an external CA's signing profile) sets
``honours_expiry = False``; its certificates must still be valid now, and backdated by at
least ``MIN_BACKDATE`` (Swarm's ``now - 1h`` is checked exactly when ``honours_expiry``).

Beyond parsing what ``sign`` returned, the suite opens real mutual-TLS connections (Python's
``ssl``, i.e. OpenSSL) with what it issued, presented as the kernel presents it (the leaf
followed by ``chain_pem``, ``IssuedCertificate.presented_pem``) and trusting only the root: a
CA that signs with an intermediate must return it in ``chain_pem``, and the intermediate must
be a real CA certificate, or every handshake in a cluster fails.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import tempfile
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal import identity
from shoal.roles.base import API_VERSIONS
from shoal.roles.ca import CAProvider, IssuedCertificate, RootMaterial
from shoal.roles.transport import PeerIdentity

NODE_ID = "3k9cx2r6ljqa1mz0f7ydpbw5e"
CLUSTER_ID = "0c8qz1w2e3r4t5y6u7i8o9p0a"
DAY = 86_400.0
#: Swarm backdates NotBefore by an hour against clock skew between nodes.
BACKDATE = dt.timedelta(hours=1)
#: The least backdating accepted from a CA whose validity follows its own policy.
MIN_BACKDATE = dt.timedelta(minutes=1)


def _public_der(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return cert_or_csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _tls_context(
    side: ssl._SSLMethod, root_pem: bytes, key_pem: bytes, cert_pem: bytes, folder: Path
) -> ssl.SSLContext:
    """An OpenSSL context that presents ``cert_pem`` (leaf + intermediates) and trusts only the root."""
    name = "server" if side == ssl.PROTOCOL_TLS_SERVER else "client"
    (folder / f"{name}.crt").write_bytes(cert_pem)
    (folder / f"{name}.key").write_bytes(key_pem)
    context = ssl.SSLContext(side)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(folder / f"{name}.crt", folder / f"{name}.key")
    context.load_verify_locations(cadata=root_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED
    return context


async def mutual_tls_peer(
    root_pem: bytes,
    server: tuple[bytes, bytes],
    client: tuple[bytes, bytes],
    server_name: str = "swarm-manager",
) -> PeerIdentity:
    """Open one real mutual-TLS connection on 127.0.0.1; return the client as the server saw it.

    ``server`` and ``client`` are ``(key_pem, presented_pem)``; both sides trust only
    ``root_pem``, and the client checks ``server_name`` as the default transport does. Raises
    ``ssl.SSLError`` (or ``ConnectionError``) when either side refuses the other.
    """
    seen: asyncio.Future[PeerIdentity] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if not seen.done():
            seen.set_result(identity.parse_identity(x509.load_der_x509_certificate(der)))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    with tempfile.TemporaryDirectory(prefix="shoal-ca-tls-") as tmp:
        folder = Path(tmp)
        server_context = _tls_context(ssl.PROTOCOL_TLS_SERVER, root_pem, *server, folder)
        client_context = _tls_context(ssl.PROTOCOL_TLS_CLIENT, root_pem, *client, folder)
        listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
        try:
            port = listener.sockets[0].getsockname()[1]
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=client_context, server_hostname=server_name),
                10,
            )
            try:
                assert await asyncio.wait_for(reader.read(2), 10) == b"ok"
            finally:
                writer.close()
            return await asyncio.wait_for(seen, 10)
        finally:
            listener.close()


class CAConformance:
    """What every CA provider must do. Override the ``ca`` fixture (and ``ca_root`` if needed)."""

    #: False for a CA whose certificate lifetime is decided by its own policy.
    honours_expiry: ClassVar[bool] = True

    @pytest.fixture
    async def ca(self) -> CAProvider:
        pytest.fail("override the `ca` fixture to return your CA provider")

    @pytest.fixture
    async def ca_root(self, ca: CAProvider) -> RootMaterial:
        root = await ca.create_root()
        await ca.load_root(root)
        return root

    async def _sign(
        self,
        ca: CAProvider,
        *,
        role: str = "swarm-worker",
        csr_subject: str = "",
        expiry: float = 90 * DAY,
        key_pem: bytes | None = None,
    ) -> tuple[bytes, IssuedCertificate]:
        key = key_pem or identity.generate_key()
        csr = identity.build_csr(key, csr_subject)
        issued = await ca.sign(csr, node_id=NODE_ID, role=role, cluster_id=CLUSTER_ID, expiry_seconds=expiry)
        return csr, issued

    # ------------------------------------------------------------------ declaration and root

    def test_declares_role_and_api_version(self, ca: CAProvider) -> None:
        assert ca.role == "ca"
        assert ca.api_version == API_VERSIONS["ca"]
        assert isinstance(ca, CAProvider)

    async def test_root_is_a_ca_certificate(self, ca_root: RootMaterial) -> None:
        root = identity.load_certificate(ca_root.cert_pem)
        constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert constraints.ca, "the root must carry CA basic constraints"
        now = dt.datetime.now(dt.UTC)
        assert root.not_valid_before_utc <= now <= root.not_valid_after_utc

    async def test_health_is_empty_when_ready(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        assert await ca.health() == ""

    # ------------------------------------------------------------------ issued certificates

    @pytest.mark.parametrize("role", ["swarm-manager", "swarm-worker"])
    async def test_subject_is_set_by_the_manager(
        self, ca: CAProvider, ca_root: RootMaterial, role: str
    ) -> None:
        # The CSR asks for another name: the CA must ignore it.
        _, issued = await self._sign(ca, role=role, csr_subject="i-am-the-leader")
        cert = identity.load_certificate(issued.cert_pem)
        assert identity.parse_identity(cert) == PeerIdentity(NODE_ID, role, CLUSTER_ID)
        assert {a.oid for a in cert.subject} == {
            NameOID.COMMON_NAME,
            NameOID.ORGANIZATIONAL_UNIT_NAME,
            NameOID.ORGANIZATION_NAME,
        }

    async def test_node_id_is_a_dns_san(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        _, issued = await self._sign(ca, role="swarm-manager")
        cert = identity.load_certificate(issued.cert_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert NODE_ID in names.get_values_for_type(x509.DNSName)

    @pytest.mark.parametrize("role", ["swarm-manager", "swarm-worker"])
    async def test_role_dns_sans(self, ca: CAProvider, ca_root: RootMaterial, role: str) -> None:
        # Swarm's SANs: the role (clients check the server name ``swarm-manager``) and, for
        # managers, ``swarm-ca`` (joiners check the CA endpoint under it).
        _, issued = await self._sign(ca, role=role)
        cert = identity.load_certificate(issued.cert_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = set(names.get_values_for_type(x509.DNSName))
        assert role in dns
        assert ("swarm-ca" in dns) == (role == "swarm-manager")

    async def test_certificate_is_for_the_csr_key(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        csr, issued = await self._sign(ca)
        cert = identity.load_certificate(issued.cert_pem)
        assert _public_der(cert) == _public_der(x509.load_pem_x509_csr(csr))

    async def test_usable_for_mutual_tls(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        _, issued = await self._sign(ca)
        cert = identity.load_certificate(issued.cert_pem)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert not constraints.ca, "a node certificate must not be a CA"
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.SERVER_AUTH in usage
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usage

    async def test_validity(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        expiry = 3 * DAY
        before = dt.datetime.now(dt.UTC)
        _, issued = await self._sign(ca, expiry=expiry)
        after = dt.datetime.now(dt.UTC)
        cert = identity.load_certificate(issued.cert_pem)
        assert cert.not_valid_before_utc <= before
        assert cert.not_valid_after_utc >= after
        if self.honours_expiry:
            slack = dt.timedelta(seconds=2)
            wanted = dt.timedelta(seconds=expiry)
            assert before + wanted - slack <= cert.not_valid_after_utc <= after + wanted + slack

    async def test_backdated(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        before = dt.datetime.now(dt.UTC)
        _, issued = await self._sign(ca)
        after = dt.datetime.now(dt.UTC)
        not_before = identity.load_certificate(issued.cert_pem).not_valid_before_utc
        if self.honours_expiry:
            slack = dt.timedelta(seconds=2)
            assert before - BACKDATE - slack <= not_before <= after - BACKDATE + slack, (
                f"NotBefore must be the signing time minus {BACKDATE}, got {not_before}"
            )
        else:
            assert not_before <= before - MIN_BACKDATE, f"NotBefore {not_before} is not backdated"

    async def test_mutual_tls_with_what_was_issued(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        server_key, client_key = identity.generate_key(), identity.generate_key()
        _, server = await self._sign(ca, role="swarm-manager", key_pem=server_key)
        _, client = await self._sign(ca, role="swarm-worker", key_pem=client_key)
        peer = await mutual_tls_peer(
            ca_root.cert_pem, (server_key, server.presented_pem), (client_key, client.presented_pem)
        )
        assert peer == PeerIdentity(NODE_ID, "swarm-worker", CLUSTER_ID)
        # The other way round: a worker certificate is no manager (server name swarm-manager).
        with pytest.raises(ssl.SSLCertVerificationError):
            await mutual_tls_peer(
                ca_root.cert_pem, (client_key, client.presented_pem), (server_key, server.presented_pem)
            )

    async def test_chain_verifies_against_root(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        _, issued = await self._sign(ca)
        identity.verify_chain(issued.cert_pem, ca_root.cert_pem, intermediates_pem=issued.chain_pem)

    async def test_each_certificate_is_distinct(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        _, first = await self._sign(ca)
        _, second = await self._sign(ca)
        serials = {identity.load_certificate(i.cert_pem).serial_number for i in (first, second)}
        assert len(serials) == 2

    # ------------------------------------------------------------------ refusals

    async def test_garbage_csr_is_rejected(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        with pytest.raises(ValueError, match="CSR"):
            await ca.sign(
                b"not a csr", node_id=NODE_ID, role="swarm-worker", cluster_id=CLUSTER_ID, expiry_seconds=DAY
            )

    async def test_csr_with_bad_signature_is_rejected(self, ca: CAProvider, ca_root: RootMaterial) -> None:
        # A CSR whose public key was swapped for another one: the signature no longer matches.
        csr = x509.load_pem_x509_csr(identity.build_csr(identity.generate_key()))
        other = x509.load_pem_x509_csr(identity.build_csr(identity.generate_key()))
        der = csr.public_bytes(serialization.Encoding.DER)
        forged_der = der.replace(_public_der(csr), _public_der(other))
        assert forged_der != der
        forged = x509.load_der_x509_csr(forged_der).public_bytes(serialization.Encoding.PEM)
        with pytest.raises(ValueError, match="CSR"):
            await ca.sign(
                forged, node_id=NODE_ID, role="swarm-worker", cluster_id=CLUSTER_ID, expiry_seconds=DAY
            )

    @pytest.mark.parametrize("role", ["swarm-admin", "", "manager"])
    async def test_only_swarm_roles(self, ca: CAProvider, ca_root: RootMaterial, role: str) -> None:
        csr = identity.build_csr(identity.generate_key())
        with pytest.raises(ValueError, match="role"):
            await ca.sign(csr, node_id=NODE_ID, role=role, cluster_id=CLUSTER_ID, expiry_seconds=DAY)
