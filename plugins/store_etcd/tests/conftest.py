"""A 3-member etcd cluster with mutual TLS for the whole session (each test uses its own prefix)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
try:
    import shoal_store_etcd  # noqa: F401
except ImportError:  # run from a checkout without installing the plugin
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from etcdcluster import EtcdCluster


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.fail("the etcd store tests need etcd: apt-get install etcd-server")
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.close()
