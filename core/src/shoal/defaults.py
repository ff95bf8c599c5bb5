"""Swarm's defaults for cluster and service settings (swarmkit api/defaults)."""

from __future__ import annotations

from shoal.proto import objects_pb2 as pb

TASK_HISTORY_LIMIT = 5
HEARTBEAT_PERIOD = 5.0
NODE_CERT_EXPIRY = 90 * 24 * 3600.0
RESTART_DELAY = 5.0
STOP_GRACE_PERIOD = 10.0
UPDATE_MONITOR = 5.0


def cluster_spec() -> pb.ClusterSpec:
    return pb.ClusterSpec(
        annotations=pb.Annotations(name="default"),
        orchestration=pb.OrchestrationConfig(task_history_retention_limit=TASK_HISTORY_LIMIT),
        raft=pb.RaftConfig(snapshot_interval=10000, heartbeat_tick=1, election_tick=10, tick_ms=100),
        dispatcher=pb.DispatcherConfig(heartbeat_period=HEARTBEAT_PERIOD),
        ca_config=pb.CAConfig(node_cert_expiry=NODE_CERT_EXPIRY),
    )


def update_config() -> pb.UpdateConfig:
    return pb.UpdateConfig(
        parallelism=1,
        delay=0.0,
        failure_action=pb.UpdateConfig.PAUSE,
        monitor=UPDATE_MONITOR,
        max_failure_ratio=0.0,
        order=pb.UpdateConfig.STOP_FIRST,
    )


def restart_policy() -> pb.RestartPolicy:
    return pb.RestartPolicy(condition=pb.RestartPolicy.ANY, delay=RESTART_DELAY)
