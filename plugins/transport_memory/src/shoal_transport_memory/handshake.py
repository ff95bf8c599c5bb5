"""The checks a mutual-TLS handshake would make, done on the PEM material directly.

No bytes are encrypted, but every decision the gRPC transport's handshake makes is made here,
with the kernel's own ``shoal.identity`` helpers, so that kernel authorisation code sees the
same peers and the same refusals under both transports:

- the server certificate must chain to the client's root (unless the client's root is empty:
  trust on first use, where it learns the root the server presents) and name
  ``server_name`` (``swarm-manager`` by default) among its DNS SANs, as gRPC's pinned target
  name does;
- a client certificate, when the client has one *and* its key, must match that key and chain
  to the server's root, else the handshake fails; a verified one becomes the ``PeerIdentity``;
  a client without one is anonymous (``peer=None``);
- both failures are ``UNAVAILABLE`` "cannot reach HOST:PORT: TLS handshake failed: ...".

Verifying ECDSA signatures costs more than a simulated call should, so successful checks are
cached per material and re-checked only for validity dates.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.x509.oid import NameOID
from shoal import identity
from shoal.plugin import PeerIdentity, RPCError, StatusCode, TLSMaterial

_CACHE_LIMIT = 4096


class HandshakeFailure(Exception):
    """The TLS handshake would have failed; the message says which side and why."""


def check_server_material(tls: TLSMaterial) -> None:
    """What a server needs to listen: ``ValueError`` naming the missing or broken piece."""
    if not tls.cert_pem or not tls.key_pem:
        raise ValueError(
            "memory transport: a server needs a certificate and a key (TLSMaterial cert_pem, key_pem)"
        )
    if not tls.root_pem:
        raise ValueError("memory transport: a server needs the cluster root (TLSMaterial.root_pem)")
    if not identity.key_matches_cert(tls.key_pem, tls.cert_pem):
        raise ValueError("memory transport: the server key does not match its certificate")
    identity.load_certificates(tls.root_pem)


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return list(san.get_values_for_type(x509.DNSName))


class _Window:
    """A cached successful check, valid while now is inside the leaf's validity period."""

    def __init__(self, cert: x509.Certificate, peer: PeerIdentity | None) -> None:
        self.not_before = cert.not_valid_before_utc
        self.not_after = cert.not_valid_after_utc
        self.peer = peer

    def holds(self, now: dt.datetime) -> bool:
        return self.not_before <= now <= self.not_after


class Handshaker:
    """Runs (and caches) the two sides' certificate checks for one transport."""

    def __init__(self, server_name: str) -> None:
        self.server_name = server_name
        self._servers: dict[tuple[bytes, ...], _Window] = {}
        self._clients: dict[tuple[bytes, ...], _Window] = {}

    def handshake(
        self, client: TLSMaterial, server: TLSMaterial, server_name: str = ""
    ) -> PeerIdentity | None:
        """The peer the server sees; raises ``HandshakeFailure`` or ``RPCError`` (UNAUTHENTICATED).
        ``server_name``: the name the server must carry (empty: this transport's manager name)."""
        now = dt.datetime.now(dt.UTC)
        self._verify_server(server, client.root_pem or server.root_pem, now, server_name or self.server_name)
        if not (client.cert_pem and client.key_pem):
            return None  # like gRPC: a certificate without its key is not presented
        return self._identify_client(client, server.root_pem, now)

    def _verify_server(self, server: TLSMaterial, trusted: bytes, now: dt.datetime, expected: str) -> None:
        key = (server.cert_pem, trusted, expected.encode())
        cached = self._servers.get(key)
        if cached is not None and cached.holds(now):
            return
        try:
            identity.verify_chain(server.cert_pem, trusted, now=now)
        except identity.CertificateError as exc:
            raise HandshakeFailure(f"server certificate refused: {exc}") from None
        cert = identity.load_certificate(server.cert_pem)
        names = _dns_names(cert)
        if expected not in names:
            raise HandshakeFailure(
                f"server certificate refused: it names {', '.join(names) or 'nothing'}, expected {expected}"
            )
        self._remember(self._servers, key, _Window(cert, None))

    def _identify_client(self, client: TLSMaterial, root_pem: bytes, now: dt.datetime) -> PeerIdentity:
        key = (client.cert_pem, client.key_pem, root_pem)
        cached = self._clients.get(key)
        if cached is not None and cached.holds(now):
            assert cached.peer is not None
            return cached.peer
        try:
            matches = identity.key_matches_cert(client.key_pem, client.cert_pem)
        except ValueError as exc:
            raise HandshakeFailure(f"client certificate unusable: {exc}") from None
        if not matches:
            raise HandshakeFailure("client certificate unusable: the key does not match the certificate")
        try:
            identity.verify_chain(client.cert_pem, root_pem, now=now)
        except identity.CertificateError as exc:
            raise HandshakeFailure(f"client certificate refused: {exc}") from None
        cert = identity.load_certificate(client.cert_pem)
        try:
            peer = identity.parse_identity(cert)
        except identity.CertificateError as exc:  # chains, but names no node: gRPC says the same
            raise RPCError(StatusCode.UNAUTHENTICATED, f"client certificate refused: {exc}") from None
        self._remember(self._clients, key, _Window(cert, peer))
        return peer

    @staticmethod
    def _remember(cache: dict[tuple[bytes, ...], _Window], key: tuple[bytes, ...], entry: _Window) -> None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = entry
