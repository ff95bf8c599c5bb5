"""Client operations through the kernel's ``ObjectStore``, recorded for the linearizability check.

Registers are services ``k-a``, ``k-b``, ``k-c`` whose label ``v`` holds the value. A write is
a transaction that creates or updates one (what every kernel write looks like). A read commits
a probe transaction through the leader and then reads the member's view: every write that
completed before the read began is below the probe's index, so what it sees is current.

The value the read's transaction saw *inside* the transaction (before its proposal) is also
kept, as a second history (``tx_ops``): that is what a kernel read-modify-write relies on.
"""

from __future__ import annotations

from shoal.proto import objects_pb2 as pb
from shoal.store.memory import Tx, copy

KEYS = ("k-a", "k-b", "k-c")
PROBE = "probe"


def put(tx: Tx, key: str, value: int) -> None:
    current = tx.service(key)
    svc = copy(current) if current is not None else pb.Service(id=key)
    svc.spec.annotations.labels["v"] = str(value)
    if current is not None:
        tx.update(svc)
    else:
        tx.create(svc)


def read_and_probe(tx: Tx, key: str, op_id: int) -> int | None:
    """Read ``key`` as the transaction sees it, and record a probe write so the read commits."""
    current = tx.service(key)
    put(tx, PROBE, op_id)
    return parse(current)


def parse(svc: pb.Service | None) -> int | None:
    if svc is None:
        return None
    return int(svc.spec.annotations.labels["v"])
