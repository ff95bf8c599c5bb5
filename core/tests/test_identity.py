"""Unit tests for shoal.identity: keys, CSRs, identity parsing, chain checks, files."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from shoal import identity
from shoal.identity import CertificateError, NodeCredentials
from shoal.roles.transport import PeerIdentity

NOW = dt.datetime.now(dt.UTC)
HOUR = dt.timedelta(hours=1)


def _name(cn: str, ou: str = "", o: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    if o:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    return x509.Name(attrs)


def _make_cert(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    not_before: dt.datetime = NOW - HOUR,
    not_after: dt.datetime = NOW + 24 * HOUR,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class _CA:
    def __init__(self, cn: str = "swarm-ca") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(cn)
        self.pem = _make_cert(self.name, self.key.public_key(), self.name, self.key, ca=True)

    def issue(self, key_pem: bytes, **kwargs: object) -> bytes:
        public = identity.load_private_key(key_pem).public_key()
        subject = _name("node1", "swarm-worker", "cluster1")
        return _make_cert(subject, public, self.name, self.key, **kwargs)  # type: ignore[arg-type]


def test_generate_key_is_p256_pkcs8() -> None:
    pem = identity.generate_key()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = identity.load_private_key(pem)
    assert isinstance(key.curve, ec.SECP256R1)
    assert identity.generate_key() != pem


def test_load_private_key_rejects_garbage_and_rsa() -> None:
    with pytest.raises(ValueError, match="invalid private key PEM"):
        identity.load_private_key(b"nope")
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="must be ECDSA"):
        identity.load_private_key(rsa_pem)


def test_csr_is_signed_by_the_key() -> None:
    key_pem = identity.generate_key()
    csr = x509.load_pem_x509_csr(identity.build_csr(key_pem, "hint"))
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hint"
    expected = identity.load_private_key(key_pem).public_key().public_numbers()
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.public_numbers() == expected


def test_parse_identity_and_dates() -> None:
    ca = _CA()
    cert = ca.issue(identity.generate_key())
    assert identity.parse_identity(cert) == PeerIdentity("node1", "swarm-worker", "cluster1")
    assert abs(identity.cert_not_after(cert) - (NOW + 24 * HOUR)) < dt.timedelta(seconds=1)
    assert abs(identity.cert_not_before(cert) - (NOW - HOUR)) < dt.timedelta(seconds=1)


def test_parse_identity_requires_all_fields() -> None:
    ca = _CA()
    key = identity.load_private_key(identity.generate_key())
    cert = _make_cert(_name("node1"), key.public_key(), ca.name, ca.key)
    with pytest.raises(CertificateError, match="exactly one OU"):
        identity.parse_identity(cert)
    with pytest.raises(CertificateError, match="invalid certificate PEM"):
        identity.parse_identity(b"garbage")


def test_verify_chain_accepts_issued_cert() -> None:
    ca = _CA()
    identity.verify_chain(ca.issue(identity.generate_key()), ca.pem)


def test_verify_chain_wrong_issuer() -> None:
    ca, other = _CA(), _CA("other-ca")
    with pytest.raises(CertificateError, match="not issued by the cluster root"):
        identity.verify_chain(other.issue(identity.generate_key()), ca.pem)


def test_verify_chain_same_name_other_key_is_bad_signature() -> None:
    ca, impostor = _CA(), _CA()  # both called swarm-ca
    with pytest.raises(CertificateError, match="bad signature"):
        identity.verify_chain(impostor.issue(identity.generate_key()), ca.pem)


def test_verify_chain_expired_and_not_yet_valid() -> None:
    ca = _CA()
    expired = ca.issue(identity.generate_key(), not_before=NOW - 3 * HOUR, not_after=NOW - HOUR)
    with pytest.raises(CertificateError, match="has expired"):
        identity.verify_chain(expired, ca.pem)
    future = ca.issue(identity.generate_key(), not_before=NOW + HOUR, not_after=NOW + 3 * HOUR)
    with pytest.raises(CertificateError, match="not yet valid"):
        identity.verify_chain(future, ca.pem)
    # ``now`` lets a caller check at another instant.
    identity.verify_chain(future, ca.pem, now=NOW + 2 * HOUR)


def test_verify_chain_through_intermediate_and_root_bundle() -> None:
    old, new = _CA("old-root"), _CA("new-root")
    # The new root cross-signed by the old one, as during a root rotation.
    cross = _make_cert(new.name, new.key.public_key(), old.name, old.key, ca=True)
    leaf = new.issue(identity.generate_key())
    identity.verify_chain(leaf + cross, old.pem)
    identity.verify_chain(leaf, old.pem, intermediates_pem=cross)
    identity.verify_chain(leaf, old.pem + new.pem)
    with pytest.raises(CertificateError, match="not issued"):
        identity.verify_chain(leaf, old.pem)


def test_verify_chain_empty_inputs() -> None:
    with pytest.raises(CertificateError, match="no certificate"):
        identity.verify_chain(b"", _CA().pem)
    with pytest.raises(CertificateError, match="no root"):
        identity.verify_chain(_CA().pem, b"")


def test_write_and_load_credentials(tmp_path: Path) -> None:
    ca = _CA()
    key = identity.generate_key()
    creds = NodeCredentials(key_pem=key, cert_pem=ca.issue(key), root_pem=ca.pem)
    target = tmp_path / "certificates"
    identity.write_credentials(target, creds)
    assert stat.S_IMODE((target / identity.KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [identity.KEY_FILE, identity.CERT_FILE, identity.ROOT_FILE]
    )  # no temporary files left behind
    assert identity.load_credentials(target) == creds

    # Renewal overwrites in place and keeps the mode.
    key2 = identity.generate_key()
    creds2 = NodeCredentials(key_pem=key2, cert_pem=ca.issue(key2), root_pem=ca.pem)
    identity.write_credentials(target, creds2)
    assert identity.load_credentials(target) == creds2
    assert stat.S_IMODE((target / identity.KEY_FILE).stat().st_mode) == 0o600


def test_load_credentials_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=identity.KEY_FILE):
        identity.load_credentials(tmp_path)
    ca = _CA()
    cert = ca.issue(identity.generate_key())
    identity.write_credentials(tmp_path, NodeCredentials(identity.generate_key(), cert, ca.pem))
    with pytest.raises(CertificateError, match="does not match"):
        identity.load_credentials(tmp_path)
