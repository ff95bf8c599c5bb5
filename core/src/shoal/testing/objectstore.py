"""An in-memory ``ObjectStore`` whose writes commit at once, for logic tests.

The kernel's object store applies a write only once its store provider committed it. Logic
tests (a control API handler, the dispatcher's bookkeeping) need no replication: ``InstantLog``
stands in for the provider and applies every proposal on the spot.
"""

from __future__ import annotations

from typing import ClassVar

from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore


class InstantLog:
    """Every proposal commits at once (a logic-only store provider)."""

    role: ClassVar[str] = "store"

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.index = 0

    async def propose(self, entry: bytes) -> int:
        self.index += 1
        self.store.apply(self.index, entry)
        return self.index


class RecordingLog(InstantLog):
    """Commits at once, remembering how many changes each entry held (tests that the
    leader's writes come in bounded pieces)."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store)
        self.sizes: list[int] = []

    async def propose(self, entry: bytes) -> int:
        self.sizes.append(len(pb.StoreBatch.FromString(entry).actions))
        return await super().propose(entry)


async def instant_store(cluster_id: str = "c1") -> ObjectStore:
    """A store holding one cluster object, whose writes commit at once."""
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]
    await store.update(lambda tx: tx.create(pb.Cluster(id=cluster_id)))
    return store
