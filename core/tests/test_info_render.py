"""``shoal info``'s readable block: docker's Swarm section layout, no Python reprs."""

from __future__ import annotations

from shoal.cli.info_cmd import render_info

PLUGINS = {"store": "raft", "runtime": "docker", "scheduler": "spread"}


def test_manager_block() -> None:
    text = render_info(
        {
            "Swarm": "active",
            "Plugins": PLUGINS,
            "StateDir": "/var/lib/shoal",
            "NodeID": "n1",
            "ClusterID": "c1",
            "Role": "manager",
            "AdvertiseAddr": "10.0.0.1:4242",
            "ListenAddr": "0.0.0.0:4242",
            "Managers": ["10.0.0.1:4242", "10.0.0.2:4242"],
            "IsLeader": True,
            "AgentConnected": True,
            "Store": {"state": "running", "role": "leader", "term": 3, "leader": "ab", "applied_index": 9},
            "Cluster": {
                "Nodes": 3,
                "Managers": 2,
                "TaskHistoryRetentionLimit": 5,
                "HeartbeatPeriodSeconds": 5.0,
                "NodeCertExpirySeconds": 90 * 86400.0,
                "ExternalCAs": ["cfssl: https://ca:8888"],
                "CACertHash": "ff00",
                "Raft": {
                    "SnapshotInterval": 10000,
                    "KeepOldSnapshots": 0,
                    "HeartbeatTick": 1,
                    "ElectionTick": 10,
                },
            },
        }
    )
    lines = text.splitlines()
    assert lines[:4] == ["Swarm: active", " NodeID: n1", " Is Manager: true", " ClusterID: c1"]
    for expected in (
        " Managers: 2",
        " Nodes: 3",
        "  Task History Retention Limit: 5",
        "  Election Tick: 10",
        "  Heartbeat Period: 5 seconds",
        "  Expiry Duration: 3 months",
        "    cfssl: https://ca:8888",
        "  Root CA Hash: sha256:ff00",
        " Is Leader: true",
        "  10.0.0.2:4242",
        " Store: running, role leader, term 3, leader ab, applied 9",
        "Plugins:",
        " runtime: docker",
    ):
        assert expected in lines, expected
    assert not any(c in text for c in "{}[]'")


def test_worker_and_inactive_blocks() -> None:
    worker = render_info(
        {"Swarm": "active", "Plugins": PLUGINS, "NodeID": "w1", "Role": "worker", "Managers": ["m:1"]}
    ).splitlines()
    assert " Is Manager: false" in worker and " Nodes: 0" not in worker and " Is Leader: false" not in worker
    inactive = render_info({"Swarm": "inactive", "Plugins": PLUGINS, "StateDir": "/s"}).splitlines()
    assert inactive == [
        "Swarm: inactive",
        "State Dir: /s",
        "Plugins:",
        " runtime: docker",
        " scheduler: spread",
        " store: raft",
    ]
