"""The raft store passes the kernel's store conformance suite (twice: default and snapshotting)."""

from __future__ import annotations

from pathlib import Path

import pytest
from shoal.testing.store import StoreConformance, StoreFactory
from shoal_store_raft import RaftStore
from shoal_store_raft.options import RaftOptions


class TestRaftStoreConformance(StoreConformance):
    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        return lambda state_dir: RaftStore(state_dir)


class TestRaftStoreConformanceWithSnapshots(StoreConformance):
    """Snapshots every 7 entries and tiny segments, so restarts go through restore + compaction."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        def build(state_dir: Path) -> RaftStore:
            return RaftStore(state_dir, RaftOptions(snapshot_interval=7, segment_bytes=4096))

        return build
