"""Helpers for tests of a swarm's managers on real daemons: the certificate a node holds, the
role its certificate file names, and which manager leads."""

from __future__ import annotations

from harness import ShoalNode, wait_until
from shoal import identity
from shoal.daemon.state import CERTS_DIR
from shoal.roles.transport import TLSMaterial


def old_certificate(node: ShoalNode) -> TLSMaterial:
    creds = identity.load_credentials(node.state_dir / CERTS_DIR)
    return TLSMaterial(root_pem=creds.root_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)


def role_on_disk(node: ShoalNode) -> str:
    """The OU of the certificate file (replaced atomically; the key may lag it for a moment)."""
    return identity.parse_identity((node.state_dir / CERTS_DIR / identity.CERT_FILE).read_bytes()).role


def leader(managers: list[ShoalNode]) -> ShoalNode:
    """The manager that leads now (the dispatcher and the CA's renewals live there)."""

    def find() -> ShoalNode | None:
        for m in managers:
            if m.proc is not None and m.proc.poll() is None and m.info().get("IsLeader"):
                return m
        return None

    return wait_until(find, 30, what="a leader")
