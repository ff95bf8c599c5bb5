"""The CA role: the cluster's root of trust, and signing node certificates.

The kernel generates each node's key and CSR itself (``shoal.identity``) and never hands a
node key to the provider. The provider creates or adopts the root and signs CSRs with the
subject Swarm uses: CN = node ID, OU = ``swarm-manager`` or ``swarm-worker``, O = cluster ID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable


@dataclass(frozen=True)
class RootMaterial:
    """The root CA as the kernel keeps it in the cluster object.

    ``key_pem`` is empty when the signing key lives outside the cluster (an external CA).
    """

    cert_pem: bytes
    key_pem: bytes = b""


@dataclass(frozen=True)
class ExternalCA:
    """One external signing service, from ``--external-ca protocol=P,url=U[,cacert=F][,k=v...]``.

    ``cacert_pem`` is the CA the service's TLS certificate must chain to (empty: the cluster
    root); ``options`` holds the extra ``k=v`` pairs.
    """

    protocol: str
    url: str
    cacert_pem: bytes = b""
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed node certificate (PEM) and the chain up to the root (PEM, may be empty).

    ``chain_pem`` holds the intermediates between the certificate and the root, when the CA
    signs with an intermediate under an offline root. The root itself stays out of it: it is
    the cluster root, which every node already trusts and join tokens pin.
    """

    cert_pem: bytes
    chain_pem: bytes = b""

    @property
    def presented_pem(self) -> bytes:
        """The certificate followed by its intermediates: what the node keeps and presents.

        A peer trusts only the root, so a node whose CA signs with an intermediate must send
        the intermediate in every TLS handshake; the kernel stores this bundle as the node's
        certificate (``swarm-node.crt``) instead of the bare leaf.
        """
        if not self.chain_pem.strip():
            return self.cert_pem
        leaf = self.cert_pem if self.cert_pem.endswith(b"\n") else self.cert_pem + b"\n"
        return leaf + self.chain_pem


#: Optional class attribute of a CA provider class: the ``--external-ca protocol=`` values it
#: serves, e.g. ``external_ca_protocols = ("acme",)``. ``swarm init --external-ca protocol=X``
#: picks the installed CA plugin whose provider class lists X, so the kernel never names a CA
#: plugin. A CA that signs by itself (the internal one) declares nothing: it serves none.
EXTERNAL_CA_PROTOCOLS_ATTR = "external_ca_protocols"


def external_ca_protocols(provider_class: type) -> tuple[str, ...]:
    """The ``--external-ca`` protocols ``provider_class`` declares it serves (``()`` when none).

    Read from the class, never from a built provider, so a plugin can be chosen for a protocol
    before anything is built. Raises ``TypeError`` (one line) for a malformed declaration: a
    protocol must be a non-empty name without spaces, commas or ``=`` (it is a flag value).
    """
    declared = getattr(provider_class, EXTERNAL_CA_PROTOCOLS_ATTR, ())
    if isinstance(declared, str) or not isinstance(declared, tuple | list | frozenset | set):
        raise TypeError(f"{EXTERNAL_CA_PROTOCOLS_ATTR} must be a tuple of protocol names, got {declared!r}")
    for protocol in declared:
        if not isinstance(protocol, str) or not protocol or any(c.isspace() or c in ",=" for c in protocol):
            raise TypeError(
                f"{EXTERNAL_CA_PROTOCOLS_ATTR} holds {protocol!r}: a protocol is a non-empty name "
                "without spaces, commas or ="
            )
    return tuple(sorted(declared))


@runtime_checkable
class CAProvider(Protocol):
    """Creates or adopts the root CA and signs node certificates."""

    role: ClassVar[str]  # "ca"
    api_version: ClassVar[int]  # 2 (2 added ``configure`` and ``PluginContext.node_tls``)

    async def create_root(self) -> RootMaterial:
        """Make the cluster's root at ``swarm init``.

        The internal CA generates ECDSA P-256, CN ``swarm-ca``, valid 20 years; an external
        CA returns its root with an empty key.
        """

    async def load_root(self, root: RootMaterial) -> None:
        """Adopt the root recorded in the cluster object (on every manager start)."""

    async def configure(self, external_cas: Sequence[ExternalCA]) -> None:
        """The external CAs of the cluster, in the order to try them.

        Called before ``create_root`` at ``swarm init`` and on every manager start, and again
        whenever ``swarm update --external-ca`` changes the list. A CA that signs by itself (the
        internal one) ignores it; an external-CA plugin raises ``ValueError`` for a list it
        cannot use (none of its protocol, a malformed URL).
        """

    async def sign(
        self, csr_pem: bytes, *, node_id: str, role: str, cluster_id: str, expiry_seconds: float
    ) -> IssuedCertificate:
        """Sign ``csr_pem`` for a node.

        ``role`` is ``"swarm-manager"`` or ``"swarm-worker"``. The certificate's subject must be
        CN=node_id, OU=role, O=cluster_id whatever the CSR asked for, with the node ID also as a
        DNS SAN. Raises ``ValueError`` for a malformed CSR and ``RuntimeError`` when the CA
        cannot sign (the message names the CA and the cause).
        """

    async def health(self) -> str:
        """``""`` when the CA can sign, else a one-line reason."""
