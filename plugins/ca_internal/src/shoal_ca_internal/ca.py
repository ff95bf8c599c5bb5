"""The built-in CA: makes the cluster root and signs node certificates the way Swarm does.

Swarm's CA is cfssl used as a library; this reproduces the certificates it produces (see the
behaviour reference, section 6.1) with ``cryptography``:

- root: ECDSA P-256, CN ``swarm-ca``, 20 years, CA basic constraints, key usage cert sign and
  CRL sign. Its key is returned to the kernel as PEM, which keeps it in the replicated store
  (encrypted at rest); this plugin never writes a file.
- node certificate: subject exactly CN = node ID, OU = role, O = cluster ID, whatever the CSR
  asked for (the manager decides who the node is, not the node); SANs ``[role, node ID]`` plus
  ``swarm-ca`` for managers; backdated one hour against clock skew between nodes; key usage
  digital signature + key encipherment; extended key usage server and client auth, because
  every node is both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from shoal import identity
from shoal.plugin import ExternalCA, IssuedCertificate, RootMaterial

ROOT_COMMON_NAME = "swarm-ca"
#: Swarm's ``RootCAExpiration`` (630720000s).
ROOT_VALIDITY = dt.timedelta(seconds=630_720_000)
#: Swarm's ``CertBackdate``: NotBefore = now - 1h so a node whose clock is a little behind
#: accepts a certificate it has just been given.
BACKDATE = dt.timedelta(hours=1)
ROLES = ("swarm-manager", "swarm-worker")
#: Extra DNS name managers carry: joiners verify the CA endpoint under this name.
CA_SERVER_NAME = "swarm-ca"


def _root_extensions_builder(
    builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    public = key.public_key()
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def make_root(now: dt.datetime | None = None) -> RootMaterial:
    """A fresh self-signed root (cert and key PEM)."""
    when = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_COMMON_NAME)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - BACKDATE)
        .not_valid_after(when + ROOT_VALIDITY)
    )
    cert = _root_extensions_builder(builder, key).sign(key, hashes.SHA256())
    return RootMaterial(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def parse_root(root: RootMaterial) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Check that ``root`` is a CA certificate with its matching ECDSA key; ``ValueError`` if not."""
    if not root.key_pem:
        raise ValueError(
            "internal CA needs the root key, but the cluster root has none (an external CA root?)"
        )
    try:
        cert = x509.load_pem_x509_certificate(root.cert_pem)
    except ValueError as exc:
        raise ValueError(f"internal CA: invalid root certificate PEM: {exc}") from None
    try:
        key = serialization.load_pem_private_key(root.key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"internal CA: invalid root key PEM: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"internal CA: root key must be ECDSA, got {type(key).__name__}")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or _public_der(public) != _public_der(
        key.public_key()
    ):
        raise ValueError("internal CA: root key does not match the root certificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValueError("internal CA: root certificate is not a CA certificate (basic constraints)")
    return cert, key


def parse_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a CSR and check it is signed by the key it carries; ``ValueError`` naming the fault."""
    return identity.load_csr(csr_pem)


def _node_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def sign_node_certificate(
    csr: x509.CertificateSigningRequest,
    root_cert: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    *,
    node_id: str,
    role: str,
    cluster_id: str,
    expiry_seconds: float,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Issue a node certificate for ``csr``'s key with the subject the manager decided."""
    if role not in ROLES:
        raise ValueError(f"invalid role {role!r}: must be one of {', '.join(ROLES)}")
    if not node_id:
        raise ValueError("invalid node ID: empty")
    if not cluster_id:
        raise ValueError("invalid cluster ID: empty")
    if not expiry_seconds > 0:
        raise ValueError(f"invalid expiry: {expiry_seconds} seconds, must be positive")
    when = now or dt.datetime.now(dt.UTC)
    # Never outlive the root: a certificate valid past its issuer cannot be verified then.
    not_after = min(when + dt.timedelta(seconds=expiry_seconds), root_cert.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
        ]
    )
    names = [role, node_id] + ([CA_SERVER_NAME] if role == "swarm-manager" else [])
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)  # checked by parse_csr
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_node_key_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
    )
    return builder.sign(root_key, hashes.SHA256())


class InternalCA:
    """The ``internal`` CA provider: holds the root in memory, signs on the leader."""

    role: ClassVar[str] = "ca"
    api_version: ClassVar[int] = 2

    def __init__(self) -> None:
        self._root: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None

    async def create_root(self) -> RootMaterial:
        """Generate the cluster root and adopt it, so ``sign`` works straight after ``swarm init``."""
        root = make_root()
        self._root = parse_root(root)
        return root

    async def load_root(self, root: RootMaterial) -> None:
        """Adopt the root from the cluster object; ``ValueError`` if it is unusable."""
        self._root = parse_root(root)

    async def configure(self, external_cas: Sequence[ExternalCA]) -> None:
        """The internal CA signs with the root key from the cluster object: nothing to set up."""

    async def sign(
        self, csr_pem: bytes, *, node_id: str, role: str, cluster_id: str, expiry_seconds: float
    ) -> IssuedCertificate:
        """Sign ``csr_pem``; ``ValueError`` for bad input, ``RuntimeError`` without a root."""
        if self._root is None:
            raise RuntimeError("internal CA cannot sign: no root loaded (create_root or load_root first)")
        csr = parse_csr(csr_pem)
        root_cert, root_key = self._root
        cert = sign_node_certificate(
            csr,
            root_cert,
            root_key,
            node_id=node_id,
            role=role,
            cluster_id=cluster_id,
            expiry_seconds=expiry_seconds,
        )
        return IssuedCertificate(cert_pem=cert.public_bytes(serialization.Encoding.PEM))

    async def health(self) -> str:
        """``""`` when a root with its key is loaded and still valid, else why not."""
        if self._root is None:
            return "internal CA: no root loaded"
        root_cert = self._root[0]
        if dt.datetime.now(dt.UTC) > root_cert.not_valid_after_utc:
            return f"internal CA: root certificate expired on {root_cert.not_valid_after_utc:%Y-%m-%d}"
        return ""
