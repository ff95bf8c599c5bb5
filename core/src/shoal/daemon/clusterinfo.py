"""The swarm-wide part of ``shoal info`` on a manager, like the Swarm section of ``docker info``.

Read from the manager's own replica of the store (no call to the leader: ``info`` must answer
even while the swarm has no leader), so a follower may show settings a moment old.
"""

from __future__ import annotations

from typing import Any

from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ReadView


def cluster_summary(view: ReadView) -> dict[str, Any]:
    """Node counts and the cluster settings ``swarm init``/``swarm update`` chose."""
    nodes = list(view.nodes.all())
    summary: dict[str, Any] = {
        "Nodes": len(nodes),
        "Managers": sum(1 for n in nodes if n.role == pb.NodeSpec.MANAGER),
    }
    cluster = view.cluster()
    if cluster is None:
        return summary
    spec = cluster.spec
    summary.update(
        ClusterName=spec.annotations.name,
        TaskHistoryRetentionLimit=spec.orchestration.task_history_retention_limit,
        HeartbeatPeriodSeconds=spec.dispatcher.heartbeat_period,
        NodeCertExpirySeconds=spec.ca_config.node_cert_expiry,
        ExternalCAs=[f"{ca.protocol}: {ca.url}" for ca in spec.ca_config.external_cas],
        CACertHash=cluster.root_ca.ca_cert_hash,
        Raft={
            "SnapshotInterval": spec.raft.snapshot_interval,
            "KeepOldSnapshots": spec.raft.keep_old_snapshots,
            "HeartbeatTick": spec.raft.heartbeat_tick,
            "ElectionTick": spec.raft.election_tick,
            "TickMs": spec.raft.tick_ms,
        },
    )
    return summary
