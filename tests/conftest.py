"""Fixtures for tests that run real shoal daemons against real container engines.

A missing engine or test image is a failure with the command that fixes it, never a skip:
CI must prove the real thing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engines import Engine, engine_for
from etcdcluster import etcd_cluster, store, store_args
from harness import RUNTIMES, TEST_IMAGE, ShoalNode

__all__ = ["etcd_cluster", "store"]  # fixtures for the tests (see etcdcluster.py)


@pytest.fixture(params=RUNTIMES)
def runtime_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(runtime_name: str) -> Iterator[Engine]:
    engine = engine_for(runtime_name)
    engine.require_image(TEST_IMAGE)
    yield engine
    engine.close()


def remove_network_leftovers(node_id: str) -> None:
    """A killed daemon keeps its data path for a restart that will not come: its nftables table,
    bridges and DOCKER-USER rules in the host's namespace would catch the next test's published
    ports and overlay subnets. The overlay plugin's cleanup removes exactly this node's (by the
    digest of its ID), as `swarm leave` does."""
    from shoal_network_overlay.names import is_ours, node_digest, table_name
    from shoal_network_overlay.provider import OverlayNetwork

    digest = node_digest(node_id)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    devices = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if ":" in line]
    if table_name(digest) in tables.split() or any(is_ours(name, digest) for name in devices):
        asyncio.run(OverlayNetwork(node_id=node_id).cleanup())


@pytest.fixture
def node_factory(
    tmp_path_factory: pytest.TempPathFactory, store: str, request: pytest.FixtureRequest
) -> Iterator[object]:
    """Start daemons; every one is killed and its containers removed at teardown. A test
    parametrised on ``store`` gets daemons on that store (``etcdcluster.py``)."""
    base = Path(tmp_path_factory.mktemp("shoal", numbered=True))
    store_plugin = store_args(store, request)
    nodes: list[ShoalNode] = []

    def make(
        name: str = "node1",
        runtime: str = "docker",
        extra_args: list[str] | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
    ) -> ShoalNode:
        node = ShoalNode(
            base=base,
            name=name,
            runtime=runtime,
            extra_args=[*store_plugin, *(extra_args or [])],
            host=host,
            env_extra=dict(env or {}),
            wrapper=list(wrapper or []),
        )
        nodes.append(node)
        return node

    yield make
    remove_nodes(nodes)
    unmount_leftovers(base)


def remove_nodes(nodes: list[ShoalNode]) -> None:
    """Kill every daemon, then remove all their containers in one parallel pass per engine and
    their network leftovers. The node ID comes from the state file (no CLI round trip per
    node); only a running daemon without one (never joined, or its file gone) is asked."""
    node_ids: dict[str, set[str]] = {}
    for node in nodes:
        try:
            node_id = node.node_id_from_state()
        except (OSError, ValueError, KeyError):
            node_id = ""  # a test left the file unreadable: ask the daemon below
        if not node_id and node.proc is not None and node.proc.poll() is None:
            try:
                node_id = str(node.info().get("NodeID", ""))
            except AssertionError:
                pass  # the daemon no longer answers and left no state: it has no containers
        node.kill()
        if node_id:
            node_ids.setdefault(node.runtime, set()).add(node_id)
    for runtime, ids in node_ids.items():
        if runtime not in RUNTIMES:
            continue  # the fake runtime: no engine holds its containers
        engine = engine_for(runtime)
        try:
            engine.remove_node_containers(*sorted(ids))
        finally:
            engine.close()
    for node_id in sorted(set().union(*node_ids.values())):
        remove_network_leftovers(node_id)


def unmount_leftovers(base: Path) -> None:
    """A killed daemon cannot unmount its tasks' secret tmpfs mounts (read-only, under its state
    dir), so pytest's clean-up of old temporary dirs would fail on them: unmount what is left
    under this test's dir, deepest first."""
    prefix = f"{base}/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
