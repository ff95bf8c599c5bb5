"""Highly available managers with real daemons: joining managers, forwarding, failover,
quorum loss and recovery, over the gRPC transport with mutual TLS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness import ShoalNode, wait_until

NO_LEADER = "The swarm does not have a leader"


def manager_status(node: ShoalNode) -> dict[str, str]:
    """Hostname -> MANAGER STATUS as ``node ls`` on ``node`` shows it."""
    rows = node.ok("node", "ls", "--format", "json").json_lines()
    return {r["Hostname"]: r["ManagerStatus"] for r in rows}


def leader_of(nodes: list[ShoalNode]) -> ShoalNode:
    def find() -> ShoalNode | None:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                result = n.cli("info", "--format", "json")
                if result.returncode == 0 and '"IsLeader": true' in result.stdout:
                    return n
        return None

    return wait_until(find, 30, what="a leader among the managers")


def three_managers(
    node_factory: Callable[..., ShoalNode], workers: int = 0
) -> tuple[list[ShoalNode], list[ShoalNode]]:
    managers = [node_factory(f"m{i}").start() for i in range(1, 4)]
    managers[0].init()
    for m in managers[1:]:
        out = m.join(managers[0], "manager").stdout
        assert "as a manager" in out, out
    others = [node_factory(f"w{i}").start() for i in range(1, workers + 1)]
    for w in others:
        w.join(managers[0])
    return managers, others


def test_managers_join_and_any_manager_serves_the_cli(node_factory: Callable[..., ShoalNode]) -> None:
    managers, _ = three_managers(node_factory)
    _m1, m2, m3 = managers
    wait_until(
        lambda: manager_status(m2) == {"m1": "Leader", "m2": "Reachable", "m3": "Reachable"},
        30,
        what="node ls on a follower to show one leader and two reachable managers",
    )
    # A write on a follower is forwarded to the leader; every manager then sees it.
    m3.ok("service", "create", "--name", "web", "--replicas", "2", "shoal-busybox:1", "sleep", "3600")
    for m in managers:
        wait_until(lambda m=m: len(m.running("web")) == 2, 60, what=f"web running, seen from {m.name}")
    # "self" is the node the CLI talks to, even when the call is forwarded.
    inspected: Any = m2.ok("node", "inspect", "self").stdout
    assert m2.node_id() in inspected
