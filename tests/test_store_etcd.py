"""The cluster tests with the etcd store (``--plugin store=etcd``, three real etcd members with
mutual TLS per test module, see ``etcdcluster.py``), and what only the etcd store has: etcd
losing its quorum.

Which cluster tests run with both stores (``store`` parametrised), and why these: each is the
one real-daemon test of a capability the store carries (bootstrap, writes and their ordered
apply, managers and workers joining, leadership, failover, a restart on the stored state), for
about 2 minutes of CI on top of the raft runs (44 + 39 + 29 s, plus 1-3 s to start each
module's etcd members, measured on 2 cores under load average 18):

- ``test_single_node.py::test_replicas_scale_and_remove[docker-etcd]``: a swarm bootstrapped on
  etcd, writes from the orchestrator, scheduler, dispatcher and CLI (service create, scale, rm).
- ``test_ha_managers.py::test_leader_kill_fails_over_and_the_old_leader_catches_up[etcd]``:
  three managers joining through a follower and two workers joining and running tasks, the
  leader killed, failover through the lease, writes through either survivor, the old leader
  restarted on its state in etcd and back as a follower that caught up.
- ``test_multi_node.py::test_agent_keeps_tasks_when_manager_is_lost[etcd]``: the multi-node
  module's store-dependent case (a worker's tasks outlive its only manager, which comes back on
  its state in etcd), about 30 s.
- here: etcd's quorum lost gives the same fast "no leader" one-line error as the raft store's,
  a swarm cannot be created on an etcd without quorum (one line, nothing half-made), and a
  manager's daemon does not start on its state without etcd (one line, exit non-zero); with the
  quorum back it starts and writes again.

Left to the raft runs: the rest of those modules (nothing in them depends on the store beyond
what the tests above do), and force-new-cluster, promote/demote (the plugin's own tests in
``plugins/store_etcd/tests`` drive membership changes against real etcd).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from harness import ShoalNode, wait_until
from shoal_store_etcd.testing import EtcdCluster

pytestmark = [pytest.mark.cluster]

NO_LEADER = "The swarm does not have a leader"


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("store", ["etcd"], indirect=True)
def test_etcd_quorum_lost_refuses_writes_fast_with_no_leader(
    node_factory: Callable[..., ShoalNode], etcd_cluster: EtcdCluster
) -> None:
    manager = node_factory("m1").start()
    manager.init()
    assert manager.info()["Store"]["backend"] == "etcd"
    manager.ok(
        "service", "create", "-d", "--name", "keep", "--replicas", "1", "shoal-busybox:1", "sleep", "3600"
    )
    etcd_cluster.stop(1)
    etcd_cluster.stop(2)
    try:
        started = time.monotonic()
        refused = manager.cli("service", "create", "--name", "lost", "shoal-busybox:1", "sleep", "3600")
        elapsed = time.monotonic() - started
        assert refused.returncode != 0 and NO_LEADER in one_line(refused.stderr), refused.stderr
        assert elapsed < 10, f"the write took {elapsed:.1f}s to be refused"
        # Reads still answer from the manager's applied state.
        read = manager.cli("service", "ls")
        assert read.returncode == 0 and "keep" in read.stdout
        # No swarm can be created on an etcd without its quorum: one line, nothing made.
        fresh = node_factory("m2").start()
        failed = fresh.cli("swarm", "init", "--advertise-addr", fresh.addr)
        assert failed.returncode != 0 and "etcd" in one_line(failed.stderr), failed.stderr
        assert fresh.cli("node", "ls").returncode != 0
        # A manager's daemon does not start on its state without etcd: it says why and exits.
        manager.stop()
        manager.start(wait=False)
        assert manager.proc is not None
        assert manager.proc.wait(30) != 0
        assert "cannot open the swarm's state in etcd" in manager.log_text().splitlines()[-1]
    finally:
        etcd_cluster.start(1)
        etcd_cluster.start(2)
    # With the quorum back, the manager starts on its state and writes again.
    manager.start()
    wait_until(
        lambda: manager.cli("service", "scale", "--detach", "keep=2").returncode == 0,
        30,
        what="writes to work again once etcd has its quorum",
    )
