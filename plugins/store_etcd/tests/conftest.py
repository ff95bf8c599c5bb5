"""A 3-member etcd cluster with mutual TLS for the whole session (each test uses its own prefix)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
try:
    import shoal_store_etcd  # noqa: F401
except ImportError:  # run from a checkout without installing the plugin
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shoal_store_etcd.testing import EtcdCluster, running_cluster


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with running_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster
