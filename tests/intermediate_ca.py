"""A test-only CA plugin that signs node certificates with an intermediate under an offline root.

This is how many platform teams run a CA: the root key stays offline (here it is generated,
used once to sign the intermediate, and thrown away), and an intermediate CA signs the node
certificates. The cluster root (what join tokens pin and every node trusts) is the offline
root; ``sign`` returns the intermediate in ``chain_pem``, and the kernel must make every node
present it, or no TLS handshake in the cluster succeeds.

The material lives in a folder next to the module (``intermediate-ca/``), written by
``write_material``; ``install`` puts the module, that folder and a ``*.dist-info`` (entry point
``intermediate`` in ``shoal.ca``) into a site directory that tests put on ``PYTHONPATH``, so a
daemon finds the plugin as it finds an installed one, and nothing enters the shared venv.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from shoal import hookimpl, identity
from shoal.roles import PluginContext
from shoal.roles.ca import ExternalCA, IssuedCertificate, RootMaterial
from shoal_ca_internal.ca import sign_node_certificate

MATERIAL_DIR = "intermediate-ca"
ROOT_FILE = "root.crt"
INTERMEDIATE_FILE = "intermediate.crt"
INTERMEDIATE_KEY_FILE = "intermediate.key"


def _ca_certificate(
    subject: str,
    public: ec.EllipticCurvePublicKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = True,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    # digital signature, certificate sign, CRL sign
    usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=None if issuer is None or not is_ca else 0),
            critical=True,
        )
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )


def write_material(folder: Path, *, intermediate_is_ca: bool = True) -> bytes:
    """An offline root (its key discarded) and an intermediate it signed; returns the root PEM.

    ``intermediate_is_ca=False`` makes a broken intermediate (no CA basic constraints) for
    tests that check such a chain is refused.
    """
    folder.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca_certificate("offline root", root_key.public_key(), None, root_key)
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = _ca_certificate(
        "issuing intermediate",
        intermediate_key.public_key(),
        root.subject,
        root_key,
        is_ca=intermediate_is_ca,
    )
    root_pem = root.public_bytes(serialization.Encoding.PEM)
    (folder / ROOT_FILE).write_bytes(root_pem)
    (folder / INTERMEDIATE_FILE).write_bytes(intermediate.public_bytes(serialization.Encoding.PEM))
    (folder / INTERMEDIATE_KEY_FILE).write_bytes(
        intermediate_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return root_pem


def resign(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, *, not_before: dt.datetime
) -> x509.Certificate:
    """``cert`` signed again by ``key`` with another NotBefore (to make broken variants)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(key, hashes.SHA256())


class IntermediateCA:
    """Signs with the intermediate in ``folder``; the root it reports has no key (offline)."""

    role: ClassVar[str] = "ca"
    api_version: ClassVar[int] = 2

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._root_pem = (folder / ROOT_FILE).read_bytes()
        self._chain_pem = (folder / INTERMEDIATE_FILE).read_bytes()
        self._issuer = identity.load_certificate(self._chain_pem)
        self._key = identity.load_private_key((folder / INTERMEDIATE_KEY_FILE).read_bytes())

    async def configure(self, external_cas: Sequence[ExternalCA]) -> None:
        """Signs by itself: no external CA to use."""

    async def create_root(self) -> RootMaterial:
        return RootMaterial(cert_pem=self._root_pem)

    async def load_root(self, root: RootMaterial) -> None:
        if root.cert_pem != self._root_pem:
            raise ValueError("intermediate CA: the cluster root is not the offline root it signs under")

    async def sign(
        self, csr_pem: bytes, *, node_id: str, role: str, cluster_id: str, expiry_seconds: float
    ) -> IssuedCertificate:
        cert = sign_node_certificate(
            identity.load_csr(csr_pem),
            self._issuer,
            self._key,
            node_id=node_id,
            role=role,
            cluster_id=cluster_id,
            expiry_seconds=expiry_seconds,
        )
        return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM), chain_pem=self._chain_pem)

    async def health(self) -> str:
        return ""


PROVIDER_CLASS = IntermediateCA


@hookimpl
def shoal_ca_provider(context: PluginContext) -> IntermediateCA:
    """Built from the material installed next to this module."""
    return IntermediateCA(Path(__file__).with_name(MATERIAL_DIR))


def install(site: Path) -> bytes:
    """Install this plugin (distribution ``shoal-test-ca-intermediate``) into ``site``; returns
    the offline root PEM."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(__file__, site / "shoal_test_ca_intermediate.py")
    info = site / "shoal_test_ca_intermediate-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shoal-test-ca-intermediate\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[shoal.ca]\nintermediate = shoal_test_ca_intermediate\n")
    return write_material(site / MATERIAL_DIR)
