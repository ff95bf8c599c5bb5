"""A throwaway CA and certificates signed by it (with the key usage and key identifiers strict
verifiers ask for), for tests that start a TLS server (a registry, a mock cloud API, the
daemon's remote control API) their clients must verify, and for the client certificates of
mutual TLS. Never for anything but tests."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ServerCertificates:
    """PEM: the CA's certificate (what clients trust), the server's certificate and key."""

    ca: bytes
    certificate: bytes
    key: bytes


class TestCA:
    """A CA that issues server and client certificates, valid ``days`` from now."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "shoal test CA", days: int = 1) -> None:
        self.now = datetime.datetime.now(datetime.UTC)
        self.days = days
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            self._builder(self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(minutes=5))
            .not_valid_after(self.now + datetime.timedelta(days=self.days))
        )

    def issue(
        self, common_name: str, *, server_ip: str = "", client_too: bool = False
    ) -> tuple[bytes, bytes]:
        """(certificate, key) PEM: a server certificate for IP ``server_ip`` (its SAN), or a
        client certificate for ``common_name`` when no IP is given. ``client_too``: a server
        certificate that is also a client one (members of a cluster that dial each other with
        mutual TLS using one certificate, like etcd's peers)."""
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server_ip else []
        if client_too or not server_ip:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = self._builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key.public_key()
        )
        if server_ip:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(server_ip))]), critical=False
            )
        certificate = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return certificate.public_bytes(pem), key_pem


def server_certificates(ip: str, ca_name: str = "shoal test CA", days: int = 1) -> ServerCertificates:
    """A fresh CA and a certificate for the server at IP address ``ip`` (its SAN), valid ``days``."""
    ca = TestCA(ca_name, days)
    certificate, key = ca.issue(ip, server_ip=ip)
    return ServerCertificates(ca.pem, certificate, key)
