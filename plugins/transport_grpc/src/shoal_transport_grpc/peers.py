"""Who is calling: from the TLS peer certificate gRPC verified to the identity handlers see.

The handshake already checked the certificate against the server's trust bundle (cluster root
+ anonymous CA, see ``anonymous``). This module decides which of the two it chains to, once
per distinct certificate (the result is cached, so a call costs a dict lookup), and re-checks
expiry on every call because an HTTP/2 connection outlives the handshake.

Calls are identified on the server's serving thread while ``set_root`` (a root rotation) runs
on the daemon's: the root and the cache of decisions made under it are one tuple, replaced at
once, so a decision made under the old root can only land in the old cache.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import grpc
from shoal import identity
from shoal.plugin import PeerIdentity, RPCError, StatusCode

from shoal_transport_grpc import anonymous

_CACHE_LIMIT = 4096


class PeerVerifier:
    """Maps a call's peer certificate to ``PeerIdentity`` (cluster node) or ``None`` (anonymous)."""

    def __init__(self, root_pem: bytes) -> None:
        # (root, cert PEM -> (identity or None, not_after as a UNIX time) decided under it)
        self._trust: tuple[bytes, dict[bytes, tuple[PeerIdentity | None, float]]] = (root_pem, {})

    def set_root(self, root_pem: bytes) -> None:
        """Trust a new root (rotation): forget every earlier decision."""
        if root_pem != self._trust[0]:
            self._trust = (root_pem, {})

    def identify(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> PeerIdentity | None:
        """The caller's identity; raises ``RPCError`` for a certificate that must not be used."""
        properties: Any = context.auth_context()
        certs = properties.get("x509_pem_cert")
        if not certs:
            return None
        # The leaf, then the intermediates the peer sent (a CA may sign with an intermediate
        # under the offline cluster root): the leaf alone would not chain to the root. On a
        # server, gRPC's chain property holds what the peer sent besides its leaf.
        chain = properties.get("x509_pem_cert_chain") or []
        pem = certs[0] + b"".join(chain)
        root_pem, cache = self._trust
        entry = cache.get(pem)
        if entry is None:
            entry = self._classify(pem, root_pem)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[pem] = entry
        peer, not_after = entry
        if time.time() > not_after:
            raise RPCError(StatusCode.UNAUTHENTICATED, "client certificate has expired; renew and reconnect")
        return peer

    def _classify(self, pem: bytes, root_pem: bytes) -> tuple[PeerIdentity | None, float]:
        cert = identity.load_certificate(pem)
        not_after = cert.not_valid_after_utc.timestamp()
        if anonymous.is_anonymous(cert):
            return None, not_after
        try:
            identity.verify_chain(pem, root_pem, now=dt.datetime.now(dt.UTC))
            return identity.parse_identity(cert), not_after
        except identity.CertificateError as exc:
            raise RPCError(StatusCode.UNAUTHENTICATED, f"client certificate refused: {exc}") from None
