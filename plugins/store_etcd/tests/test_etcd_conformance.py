"""The store conformance suite against the etcd store and three real etcd members (mutual TLS)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from shoal.roles.store import StoreProvider
from shoal.testing.store import StoreConformance
from shoal_store_etcd.client import Credentials
from shoal_store_etcd.options import EtcdOptions
from shoal_store_etcd.provider import EtcdStore
from shoal_store_etcd.testing import EtcdCluster


def options(etcd: EtcdCluster, prefix: str) -> EtcdOptions:
    f = etcd.client_files
    return EtcdOptions(
        tuple(etcd.endpoints), Credentials(f.ca.read_bytes(), f.cert.read_bytes(), f.key.read_bytes()), prefix
    )


class TestEtcdStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, etcd: EtcdCluster) -> Callable[[Path], StoreProvider]:
        def build(state_dir: Path) -> StoreProvider:
            # One swarm per test: the same prefix for the same state directory (restarts).
            prefix = "/t/" + hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
            return EtcdStore(state_dir, options(etcd, prefix), node_id="m1", addr="127.0.0.1:2377")

        return build


def test_without_options_it_builds_and_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    """``plugin ls`` builds every plugin without options: the etcd store must not look broken
    there, and a swarm started without them gets one line saying which options it needs."""
    import asyncio

    from shoal.roles.store import StoreOpenError
    from shoal.testing.store import RecordingMachine

    store = EtcdStore(tmp_path, EtcdOptions.parse({}), node_id="m1", addr="127.0.0.1:2377")
    with pytest.raises(StoreOpenError, match=r"store\.endpoints"):
        asyncio.run(store.start(RecordingMachine(), bootstrap=True))
    with pytest.raises(ValueError, match="missing: ca, cert, key"):
        EtcdOptions.parse({"endpoints": "127.0.0.1:2379"})
    with pytest.raises(ValueError, match="unknown store option"):
        EtcdOptions.parse({"endpoint": "127.0.0.1:2379"})
