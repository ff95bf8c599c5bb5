"""Manager certificates issued by the internal CA plugin, the way a node gets them.

Each node generates its key and CSR with ``shoal.identity`` and the ``shoal_ca_internal`` CA
signs it with OU ``swarm-manager``. Signing costs milliseconds, so one process issues them once
and every seed reuses them (certificates decide nothing in a run, so determinism is kept).
"""

from __future__ import annotations

from shoal import identity
from shoal.roles.transport import TLSMaterial
from shoal_ca_internal import InternalCA

CLUSTER_ID = "memsim-cluster"

_issued: dict[tuple[str, str], TLSMaterial] = {}
_ca: InternalCA | None = None
_root_pem = b""


async def material(node_id: str, role: str = "swarm-manager") -> TLSMaterial:
    """TLS material for ``node_id`` in the simulation's cluster (cached per process)."""
    global _ca, _root_pem
    cached = _issued.get((node_id, role))
    if cached is not None:
        return cached
    if _ca is None:
        _ca = InternalCA()
        _root_pem = (await _ca.create_root()).cert_pem
    key = identity.generate_key()
    issued = await _ca.sign(
        identity.build_csr(key), node_id=node_id, role=role, cluster_id=CLUSTER_ID, expiry_seconds=86400
    )
    tls = TLSMaterial(root_pem=_root_pem, cert_pem=issued.cert_pem, key_pem=key)
    _issued[(node_id, role)] = tls
    return tls
