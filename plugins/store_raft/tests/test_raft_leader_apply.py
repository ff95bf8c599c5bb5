"""The leader applies the entries it proposed from the objects they were built of (issue 18):
the raft store hands its state machine the very bytes it was given, so the object store never
parses its own entry back."""

from __future__ import annotations

from pathlib import Path

import pytest
from shoal.proto import objects_pb2 as pb
from shoal.store import memory
from shoal.store.memory import ObjectStore
from shoal_store_raft import RaftStore
from shoal_store_raft.options import RaftOptions


async def test_the_raft_leader_applies_its_own_entries_unparsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ObjectStore()
    raft = RaftStore(tmp_path, RaftOptions())
    store.provider = raft
    await raft.start(store, bootstrap=True)
    parsed: list[int] = []
    real = pb.StoreBatch

    class Counted:
        def __call__(self) -> pb.StoreBatch:
            return real()

        def FromString(self, data: bytes) -> pb.StoreBatch:  # protobuf's name
            parsed.append(len(data))
            return real.FromString(data)

    class Protos:
        StoreBatch = Counted()

        def __getattr__(self, name: str) -> object:
            return getattr(pb, name)

    monkeypatch.setattr(memory, "pb", Protos())
    try:
        for number in range(3):
            await store.update(lambda tx, n=number: tx.create(pb.Node(id=f"n{n}")))  # type: ignore[misc]
        assert parsed == []  # before: each entry parsed back as it was applied
        assert sorted(store.view.nodes.items) == ["n0", "n1", "n2"]
        assert store.view.nodes.get("n2").meta.version == store.applied_index  # type: ignore[union-attr]
    finally:
        await raft.stop()
