"""Helpers for tests of a swarm's managers on real daemons: the certificate a node holds, the
role its certificate file names, and which manager leads."""

from __future__ import annotations

from collections.abc import Callable

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


def three_managers_and_a_worker(node_factory: Callable[..., ShoalNode]) -> tuple[ShoalNode, ...]:
    """Started nodes m1 (which inits the swarm), m2 and m3 joined as managers, w1 as a worker."""
    m1, m2, m3 = (node_factory(name).start() for name in ("m1", "m2", "m3"))
    m1.init()
    m2.join(m1, "manager")
    m3.join(m1, "manager")
    w1 = node_factory("w1").start()
    w1.join(m1)
    return m1, m2, m3, w1
