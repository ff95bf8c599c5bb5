"""The "anonymous" client certificate: how a caller without a node certificate gets in.

Swarm's servers use Go's ``VerifyClientCertIfGiven``: a client certificate is optional, but
one that is sent must verify. grpc-python cannot express that. ``ssl_server_credentials`` and
``dynamic_ssl_server_credentials`` map ``require_client_auth=False`` to
``GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE`` (the server never even asks for a certificate, so
no caller has an identity), and ``True`` to ``REQUEST_AND_REQUIRE_..._AND_VERIFY`` (a joining
node, which has no certificate yet, cannot connect). The other C-core modes are not exposed.

So the server *requires* and *verifies* a client certificate at the handshake, against a trust
bundle of the cluster root **plus this anonymous CA**, and a client with no node certificate
presents a certificate from the anonymous CA. The anonymous CA's private key is derived from a
fixed public string: it is deliberately public, anyone can mint a certificate under it, and so
such a certificate proves nothing. The server maps every peer certificate that does not chain
to the cluster root to ``peer=None`` (exactly what "no certificate" means), and a certificate
that chains to neither root (another cluster, expired, forged) never gets past the handshake.
The anonymous CA is never used to authenticate a *server*: clients trust only the cluster root.

Derivation and signing are deterministic (RFC 6979), so every process builds byte-identical
anonymous CA certificates.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_SEED = b"shoal-transport-grpc anonymous client CA v1 (this key is public on purpose)"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
CA_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shoal-anonymous"),
        x509.NameAttribute(NameOID.COMMON_NAME, "shoal anonymous client CA"),
    ]
)
_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_END = dt.datetime(2199, 12, 31, tzinfo=dt.UTC)


def _ca_key() -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha256(_SEED).digest(), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@functools.cache
def ca_certificate() -> x509.Certificate:
    """The anonymous CA certificate (identical in every process)."""
    key = _ca_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(CA_NAME)
        .issuer_name(CA_NAME)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_EPOCH)
        .not_valid_after(_END)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)


@functools.cache
def ca_pem() -> bytes:
    """The anonymous CA certificate, PEM, for the server's client-trust bundle."""
    return _pem(ca_certificate())


@functools.cache
def client_material() -> tuple[bytes, bytes]:
    """``(key_pem, cert_pem)`` of an anonymous client certificate, made once per process.

    A fresh key per process; validity is the anonymous CA's, so it never needs renewing.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = _ca_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anonymous")]))
        .issuer_name(CA_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_EPOCH)
        .not_valid_after(_END)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, _pem(cert)


def is_anonymous(cert: x509.Certificate) -> bool:
    """True if ``cert`` was issued by the anonymous CA (and so identifies nobody)."""
    return cert.issuer == CA_NAME
