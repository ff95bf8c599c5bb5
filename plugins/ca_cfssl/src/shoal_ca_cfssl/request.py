"""The cfssl sign request Swarm sends, and the checks on what comes back.

The request is the one SwarmKit's external CA sends (behaviour reference §6.3): the CSR, the
hosts ``[role, node ID]`` (plus ``swarm-ca`` for managers, the name joiners check the CA
endpoint under) and the subject CN = node ID, OU = role, O = cluster ID, which overrides what
the CSR asked for. cfssl is trusted to sign, not to decide who a node is: the answer is refused
unless its subject, key and issuer are exactly what the manager asked for.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from shoal import identity

ROLES = ("swarm-manager", "swarm-worker")
#: Extra DNS name managers carry: joiners verify the CA endpoint under this name.
CA_SERVER_NAME = "swarm-ca"


def check_arguments(
    csr_pem: bytes, node_id: str, role: str, cluster_id: str
) -> x509.CertificateSigningRequest:
    """``ValueError`` naming the fault before anything is sent to the external CA."""
    if role not in ROLES:
        raise ValueError(f"invalid role {role!r}: must be one of {', '.join(ROLES)}")
    if not node_id:
        raise ValueError("invalid node ID: empty")
    if not cluster_id:
        raise ValueError("invalid cluster ID: empty")
    return identity.load_csr(csr_pem)


def sign_request(
    csr_pem: bytes, *, node_id: str, role: str, cluster_id: str, options: dict[str, str]
) -> dict[str, Any]:
    """cfssl's ``SignRequest`` JSON; ``profile`` and ``label`` come from the ``--external-ca`` options."""
    hosts = [role, node_id] + ([CA_SERVER_NAME] if role == "swarm-manager" else [])
    return {
        "hosts": hosts,
        "certificate_request": csr_pem.decode(),
        "subject": {"CN": node_id, "names": [{"OU": role, "O": cluster_id}]},
        "profile": options.get("profile", ""),
        "crl_override": "",
        "label": options.get("label", ""),
    }


def _public_der(item: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return item.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_issued(
    result: Any,
    csr: x509.CertificateSigningRequest,
    *,
    node_id: str,
    role: str,
    cluster_id: str,
    root_pem: bytes,
) -> tuple[bytes, bytes]:
    """The leaf PEM and any intermediates from cfssl's ``result``; ``ValueError`` saying what is wrong."""
    if not isinstance(result, dict) or not isinstance(result.get("certificate"), str):
        raise ValueError("the answer has no result.certificate")
    pem = result["certificate"].encode()
    try:
        certs = identity.load_certificates(pem)
    except identity.CertificateError as exc:
        raise ValueError(str(exc)) from None
    if not certs:
        raise ValueError("result.certificate holds no PEM certificate")
    leaf = certs[0]
    try:
        got = identity.parse_identity(leaf)
    except identity.CertificateError as exc:
        raise ValueError(f"the certificate's subject is not a node's: {exc}") from None
    wanted = (node_id, role, cluster_id)
    if (got.node_id, got.role, got.cluster_id) != wanted:
        raise ValueError(
            f"the certificate is for CN={got.node_id}, OU={got.role}, O={got.cluster_id}, "
            f"not CN={node_id}, OU={role}, O={cluster_id} as asked"
        )
    if _public_der(leaf) != _public_der(csr):
        raise ValueError("the certificate is not for the key of the CSR")
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:])
    if root_pem:
        try:
            identity.verify_chain(leaf_pem, root_pem, intermediates_pem=chain_pem)
        except identity.CertificateError as exc:
            raise ValueError(str(exc)) from None
    return leaf_pem, chain_pem
