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
``honours_expiry = False``; its certificates must still be valid now.
"""

from __future__ import annotations

import datetime as dt
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


def _public_der(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return cert_or_csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


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
