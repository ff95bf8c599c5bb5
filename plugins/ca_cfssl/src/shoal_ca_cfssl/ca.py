"""The ``cfssl`` CA provider: node certificates signed by an external cfssl server.

This is Swarm's ``--external-ca protocol=cfssl`` (behaviour reference §6.3): the cluster root is
the external CA's certificate, its key never enters the cluster (``RootMaterial.key_pem`` is
empty), and every join or renewal is a POST of a cfssl sign request to the configured URLs, in
order, the first answer winning.

Authentication: the manager presents **its own node certificate** (``context.node_tls()``) as TLS
client certificate, so cfssl can run with ``-mutual-tls-ca`` set to its own CA and serve only
the cluster's managers. During ``swarm init`` the manager has no certificate yet; the kernel then
hands out the bootstrap certificate the operator got from cfssl out of band.

The certificate lifetime is decided by cfssl's signing profile: its sign API has no field for
it, so ``expiry_seconds`` (``swarm update --cert-expiry``) does not reach an external CA.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from shoal import identity
from shoal.plugin import ExternalCA, IssuedCertificate, RootMaterial, TLSMaterial

from shoal_ca_cfssl import client, request

log = logging.getLogger("shoal.ca.cfssl")

PROTOCOL = "cfssl"


def info_url(sign_url: str) -> str:
    """cfssl's info endpoint next to the configured sign endpoint (``.../sign`` -> ``.../info``)."""
    parts = urlsplit(sign_url)
    path = parts.path
    path = path[: -len("sign")] + "info" if path.endswith("/sign") else "/api/v1/cfssl/info"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _info_body(ca: ExternalCA) -> dict[str, Any]:
    """cfssl's info request: the signer named by the ``label`` option, else the default one."""
    return {"label": ca.options["label"]} if ca.options.get("label") else {}


def _check_ca_certificate(pem: bytes, what: str) -> x509.Certificate:
    try:
        cert = identity.load_certificate(pem)
    except identity.CertificateError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if not identity.is_ca_certificate(cert):
        raise ValueError(f"{what}: {cert.subject.rfc4514_string()} is not a CA certificate")
    return cert


def _check_external_ca(ca: ExternalCA) -> None:
    if ca.protocol != PROTOCOL:
        raise ValueError(
            f'external CA {ca.url}: protocol "{ca.protocol}" is not supported by the cfssl CA plugin '
            f"(only protocol=cfssl)"
        )
    parts = urlsplit(ca.url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"external CA {ca.url!r}: the URL must be https://HOST[:PORT]/api/v1/cfssl/sign")
    try:
        parts.port  # noqa: B018 -- raises for a malformed port
    except ValueError:
        raise ValueError(f"external CA {ca.url!r}: invalid port") from None
    if ca.cacert_pem:
        _check_ca_certificate(ca.cacert_pem, f"external CA {ca.url}: cacert")


class CfsslCA:
    """Signs through cfssl's ``/api/v1/cfssl/sign``; holds no key."""

    role: ClassVar[str] = "ca"
    api_version: ClassVar[int] = 2
    #: ``swarm init --external-ca protocol=cfssl`` picks this plugin (see ``shoal.roles.ca``).
    external_ca_protocols: ClassVar[tuple[str, ...]] = (PROTOCOL,)

    def __init__(self, *, state_dir: Path, node_tls: Callable[[], TLSMaterial | None]) -> None:
        self._node_tls = node_tls
        self._scratch = state_dir / "client-tls"
        #: SSL contexts by (trust, certificate, key): rebuilt only when one of them changes
        #: (a renewal gives the manager a new certificate and key).
        self._contexts: dict[tuple[bytes, bytes, bytes], ssl.SSLContext] = {}
        self._cas: list[ExternalCA] = []
        self._root: bytes = b""

    # ------------------------------------------------------------------ configuration and root

    async def configure(self, external_cas: Sequence[ExternalCA]) -> None:
        """Keep the URLs to try, in order; ``ValueError`` for a list this plugin cannot use."""
        if not external_cas:
            raise ValueError(
                "the cfssl CA plugin needs an external CA: "
                "--external-ca protocol=cfssl,url=https://HOST:PORT/api/v1/cfssl/sign[,cacert=FILE]"
            )
        for ca in external_cas:
            _check_external_ca(ca)
        self._cas = list(external_cas)

    async def create_root(self) -> RootMaterial:
        """The first external CA's ``cacert``, else the certificate cfssl's info endpoint reports.

        Without ``cacert`` there is no cluster root yet to check cfssl's TLS certificate with, so
        the system's trusted roots are used for that one call.
        """
        first = self._first()
        if first.cacert_pem:
            root = first.cacert_pem
        else:
            try:
                result = await self._call(first, info_url(first.url), _info_body(first))
            except (client.Unreachable, client.Refused) as exc:
                raise RuntimeError(f"external CA {first.url}: {exc}") from None
            if not isinstance(result, dict) or not isinstance(result.get("certificate"), str):
                raise RuntimeError(f"external CA {first.url}: the info answer has no certificate")
            root = result["certificate"].encode()
            try:
                _check_ca_certificate(root, f"external CA {first.url}: info certificate")
            except ValueError as exc:
                raise RuntimeError(str(exc)) from None
        self._root = root
        return RootMaterial(cert_pem=root, key_pem=b"")

    async def load_root(self, root: RootMaterial) -> None:
        """Adopt the cluster root: it verifies cfssl's TLS when an external CA has no ``cacert``."""
        _check_ca_certificate(root.cert_pem, "cfssl CA: cluster root")
        self._root = root.cert_pem

    def _first(self) -> ExternalCA:
        if not self._cas:
            raise RuntimeError("cfssl CA: no external CA configured (swarm init --external-ca)")
        return self._cas[0]

    # ------------------------------------------------------------------ calls

    def _client_identity(self) -> client.ClientIdentity | None:
        """The node's current certificate, asked for on every call: renewals replace it."""
        tls = self._node_tls()
        if tls is None or not tls.cert_pem or not tls.key_pem:
            return None
        return client.ClientIdentity(tls.cert_pem, tls.key_pem)

    def _context(self, trust: bytes, mine: client.ClientIdentity | None) -> ssl.SSLContext:
        key = (trust, mine.cert_pem if mine else b"", mine.key_pem if mine else b"")
        context = self._contexts.get(key)
        if context is None:
            context = client.ssl_context(trust, mine, self._scratch)
            if len(self._contexts) >= 8:  # old certificates: never used again
                self._contexts.clear()
            self._contexts[key] = context
        return context

    async def _call(self, ca: ExternalCA, url: str, body: dict[str, Any]) -> Any:
        """One POST; ``client.Unreachable``/``client.Refused`` (a missing client cert is said so)."""
        mine = self._client_identity()
        try:
            context = self._context(ca.cacert_pem or self._root, mine)
        except ValueError as exc:
            raise client.Unreachable(str(exc)) from None
        try:
            return await client.post_json(url, body, context)
        except client.Unreachable as exc:
            if mine is None:
                raise client.Unreachable(
                    f"{exc} (this node has no certificate to present: the first manager needs "
                    "swarm init --bootstrap-cert/--bootstrap-key)"
                ) from None
            raise

    async def sign(
        self, csr_pem: bytes, *, node_id: str, role: str, cluster_id: str, expiry_seconds: float
    ) -> IssuedCertificate:
        """Ask each external CA in turn; the first good certificate wins.

        ``ValueError`` for bad input (checked before anything is sent). ``RuntimeError`` when no
        CA signs: ``external CA <url> refused: <cfssl's messages>`` if one answered
        ``success: false`` or with a certificate other than the one asked for, else
        ``external CA unreachable: <url>: <reason>; ...``. ``expiry_seconds`` is not sent:
        cfssl's signing profile decides the lifetime.
        """
        csr = request.check_arguments(csr_pem, node_id, role, cluster_id)
        if not self._cas:
            raise RuntimeError("cfssl CA: no external CA configured (swarm init --external-ca)")
        refusals: list[str] = []
        unreachable: list[str] = []
        for ca in self._cas:
            body = request.sign_request(
                csr_pem, node_id=node_id, role=role, cluster_id=cluster_id, options=ca.options
            )
            try:
                result = await self._call(ca, ca.url, body)
            except client.Unreachable as exc:
                log.warning("external CA %s unreachable: %s", ca.url, exc)
                unreachable.append(f"{ca.url}: {exc}")
                continue
            except client.Refused as exc:
                log.warning("external CA %s refused to sign for node %s: %s", ca.url, node_id, exc)
                refusals.append(f"external CA {ca.url} refused: {exc}")
                continue
            try:
                cert_pem, chain_pem = request.check_issued(
                    result, csr, node_id=node_id, role=role, cluster_id=cluster_id, root_pem=self._root
                )
            except ValueError as exc:
                log.warning("external CA %s returned an unusable certificate: %s", ca.url, exc)
                refusals.append(f"external CA {ca.url} refused: unusable certificate: {exc}")
                continue
            return IssuedCertificate(cert_pem=cert_pem, chain_pem=chain_pem)
        if refusals:
            tail = f" (also unreachable: {'; '.join(unreachable)})" if unreachable else ""
            raise RuntimeError("; ".join(refusals) + tail)
        raise RuntimeError("external CA unreachable: " + "; ".join(unreachable))

    async def health(self) -> str:
        """``""`` if the first external CA answers its info endpoint, else why not."""
        try:
            first = self._first()
        except RuntimeError as exc:
            return str(exc)
        try:
            await self._call(first, info_url(first.url), _info_body(first))
        except (client.Unreachable, client.Refused) as exc:
            return f"external CA {first.url}: {exc}"
        return ""
