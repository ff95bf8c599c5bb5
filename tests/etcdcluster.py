"""The store a cluster test's daemons use: ``raft`` (the default) or ``etcd``.

A test opts in to both with ``@pytest.mark.parametrize("store", STORES, indirect=True)``;
``node_factory`` then starts every daemon of that test with ``--plugin store=etcd`` and the
options pointing at three real etcd members with mutual TLS, started once per test module
(``etcd_cluster``), each test's swarm under its own key prefix.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from shoal_store_etcd.testing import EtcdCluster, running_cluster

STORES = ("raft", "etcd")
_prefixes = itertools.count(1)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "raft"))


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with running_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def store_args(store: str, request: pytest.FixtureRequest) -> list[str]:
    """The daemon arguments for the store this test asked for (none for raft)."""
    if store != "etcd":
        return []
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return cluster.plugin_args(f"/shoal-test/{next(_prefixes)}")
