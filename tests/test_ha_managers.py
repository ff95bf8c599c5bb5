"""Highly available managers with real daemons: joining managers, forwarding, failover,
quorum loss and recovery, over the gRPC transport with mutual TLS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from etcdcluster import STORES
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
    # The third manager and the workers join through a follower: it passes the joins on.
    for m, via in ((managers[1], managers[0]), (managers[2], managers[1])):
        out = m.join(via, "manager").stdout
        assert "as a manager" in out, out
    others = [node_factory(f"w{i}").start() for i in range(1, workers + 1)]
    for w in others:
        w.join(managers[2])
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
    m3.ok("service", "create", "-d", "--name", "web", "--replicas", "2", "shoal-busybox:1", "sleep", "3600")
    for m in managers:
        wait_until(lambda m=m: len(m.running("web")) == 2, 60, what=f"web running, seen from {m.name}")
    # The consensus timing is the swarm's: one update reaches every manager's store.
    refused = m2.cli("swarm", "update", "--election-tick", "2", "--heartbeat-tick", "2")
    assert refused.returncode == 2 and "must be greater than the heartbeat tick" in refused.stderr
    m2.ok("swarm", "update", "--raft-tick", "50ms", "--election-tick", "20")
    for m in managers:
        wait_until(
            lambda m=m: (m.info()["Store"]["tick_ms"], m.info()["Store"]["election_ticks"]) == (50, 20),
            30,
            what=f"{m.name} to use the new raft timing",
        )
    # "self" is the node the CLI talks to, even when the call is forwarded.
    inspected: Any = m2.ok("node", "inspect", "self").stdout
    assert m2.node_id() in inspected
    # An empty reference is a mistake, not "self", on a follower too (issue 13, defect 7).
    empty = m2.cli("node", "inspect", "")
    assert empty.returncode == 2 and "node ID or name is required" in empty.stderr, empty.stderr


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_leader_kill_fails_over_and_the_old_leader_catches_up(node_factory: Callable[..., ShoalNode]) -> None:
    managers, _workers = three_managers(node_factory, workers=2)
    m1 = managers[0]
    # A task the scheduler places on the killed leader's node (still Ready) runs only once that
    # node is Down and the task replaced: a short heartbeat makes that seconds (the new leader's
    # start-up grace is two grace periods), not half a minute.
    m1.ok("swarm", "update", "--dispatcher-heartbeat", "1s")
    m1.ok("service", "create", "-d", "--name", "web", "--replicas", "4", "shoal-busybox:1", "sleep", "3600")
    wait_until(lambda: len(m1.running("web")) == 4, 90, what="4 web tasks running")

    old = leader_of(managers)
    old.kill()
    survivors = [m for m in managers if m is not old]
    new = leader_of(survivors)
    assert new is not old
    # Writes work through either survivor; the service stays converged.
    survivors[0].ok(
        "service", "create", "-d", "--name", "after", "--replicas", "2", "shoal-busybox:1", "sleep", "3600"
    )
    survivors[1].ok("service", "scale", "-d", "web=5")
    for name, count in (("web", 5), ("after", 2)):
        wait_until(
            lambda name=name, count=count: len(new.running(name)) == count,
            90,
            what=f"{count} {name} tasks running after failover",
        )
    wait_until(
        lambda: manager_status(new)[old.name] == "Unreachable",
        30,
        what="the killed manager shown Unreachable",
    )
    # The old leader comes back as a follower and catches up with what it missed.
    old.start()
    wait_until(
        lambda: manager_status(new).get(old.name) == "Reachable", 60, what="the old leader back as Reachable"
    )

    def caught_up() -> bool:
        result = old.ok("service", "ls", "--format", "json")
        return "out of date" not in result.stderr and {s["Name"] for s in result.json_lines()} == {
            "web",
            "after",
        }

    wait_until(caught_up, 30, what="the old leader to serve the services created while it was down")


def test_quorum_loss_refuses_writes_fast_and_force_new_cluster_recovers(
    node_factory: Callable[..., ShoalNode],
) -> None:
    managers, _ = three_managers(node_factory)
    m1 = managers[0]
    m1.ok("service", "create", "-d", "--name", "keep", "--replicas", "1", "shoal-busybox:1", "sleep", "3600")
    wait_until(lambda: len(m1.running("keep")) == 1, 60, what="keep running")
    survivor = managers[2]
    for m in managers[:2]:
        m.kill()
    started = time.monotonic()
    refused = survivor.cli("service", "create", "--name", "lost", "shoal-busybox:1", "sleep", "3600")
    elapsed = time.monotonic() - started
    assert refused.returncode != 0 and NO_LEADER in refused.stderr, refused.stderr
    assert elapsed < 10, f"the write took {elapsed:.1f}s to be refused"
    # Reads still answer, flagged as possibly stale.
    read = survivor.cli("service", "ls")
    assert read.returncode == 0 and "keep" in read.stdout
    wait_until(
        lambda: "may be out of date" in survivor.cli("service", "ls").stderr, 15, what="a stale-read warning"
    )

    survivor.ok("swarm", "init", "--force-new-cluster")
    survivor.ok("service", "create", "-d", "--name", "after", "shoal-busybox:1", "sleep", "3600")
    names = {s["Name"] for s in survivor.ok("service", "ls", "--format", "json").json_lines()}
    assert names == {"keep", "after"}
    status = manager_status(survivor)
    assert status[survivor.name] == "Leader"
    # A new manager can join the recovered swarm.
    fresh = node_factory("m4").start()
    fresh.join(survivor, "manager")
    wait_until(lambda: manager_status(fresh).get("m4") == "Reachable", 30, what="the new manager reachable")
    # An old manager that comes back is told it was removed, and does not disturb the swarm.
    managers[0].start()
    wait_until(
        lambda: "no longer a member" in managers[0].cli("node", "ls").stderr,
        30,
        what="the old manager to report that it was removed",
    )
    survivor.ok("service", "scale", "-d", "after=2")
    wait_until(lambda: len(survivor.running("after")) == 2, 60, what="after scaled to 2")


def test_promote_and_demote(node_factory: Callable[..., ShoalNode]) -> None:
    m1 = node_factory("m1").start()
    m1.init()
    w1, w2 = node_factory("w1").start(), node_factory("w2").start()
    w1.join(m1)
    w2.join(m1)
    refused = m1.cli("node", "demote", "m1")
    assert refused.returncode != 0 and "attempting to demote the last manager of the swarm" in refused.stderr

    assert "promoted to a manager" in m1.ok("node", "promote", "w1", "w2").stdout
    wait_until(
        lambda: manager_status(m1) == {"m1": "Leader", "w1": "Reachable", "w2": "Reachable"},
        60,
        what="both promoted workers to be reachable managers",
    )
    # A promoted node serves the CLI as a manager.
    w1.ok("service", "create", "-d", "--name", "s", "shoal-busybox:1", "sleep", "3600")
    # Demoting the leader hands leadership to another manager first.
    m1.ok("node", "demote", "m1")
    wait_until(
        lambda: manager_status(w1).get("m1") == "" and "Leader" in manager_status(w1).values(),
        60,
        what="m1 demoted and a new leader elected",
    )
    wait_until(lambda: m1.info()["Role"] == "worker", 30, what="m1 to run as a worker")
    refused = m1.cli("service", "ls")
    assert refused.returncode != 0 and "not a swarm manager" in refused.stderr
    # A demoted node can be promoted again (it joins as a new store member).
    w1.ok("node", "promote", "m1")
    wait_until(
        lambda: sorted(manager_status(w1).values()) == ["Leader", "Reachable", "Reachable"],
        60,
        what="m1 to be a reachable manager again",
    )
    # Three managers, one down: removing another would leave one of two reachable.
    w2.kill()
    wait_until(lambda: manager_status(w1).get("w2") == "Unreachable", 30, what="w2 unreachable")
    target = "m1" if manager_status(w1)["m1"] == "Reachable" else "w1"
    refused = w1.cli("node", "demote", target)
    assert refused.returncode != 0
    assert "can't remove member from the raft: this would result in a loss of quorum" in refused.stderr


def desired_replicas(row: dict[str, str]) -> int:
    """The desired count of a `service ls` row: REPLICAS reads "running/desired", followed by
    " (updating)" while an update is in flight, which a scale racing a leader kill can leave."""
    return int(row["Replicas"].split("/")[1].split()[0])


def test_leader_killed_three_times_under_writes_loses_no_acknowledged_write(
    node_factory: Callable[..., ShoalNode],
) -> None:
    """kill -9 of the leader three times in a row (restarted each time) while a client keeps
    creating and updating services through the managers: every write the CLI acknowledged is
    there at the end, and the services converge."""
    managers, _workers = three_managers(node_factory, workers=2)
    acknowledged: dict[str, int] = {}  # service -> last acknowledged replica count
    unsure: dict[str, set[int]] = {}  # service -> counts of later scales whose outcome is unknown
    stop = threading.Event()
    errors: list[str] = []

    def client() -> None:
        i = 0
        while not stop.is_set():
            target = managers[i % 3]
            i += 1
            if target.proc is None or target.proc.poll() is not None:
                continue
            name = f"s{i}"
            created = target.cli(
                "service",
                "create",
                "-d",
                "--name",
                name,
                "--replicas",
                "0",
                "shoal-busybox:1",
                "sleep",
                "3600",
                timeout=60,
            )
            if created.returncode == 0:
                acknowledged[name] = 0
            elif NO_LEADER not in created.stderr and "not the leader" not in created.stderr:
                errors.append(created.stderr)
            if acknowledged:
                victim = sorted(acknowledged)[i % len(acknowledged)]
                scaled = target.cli("service", "scale", "-d", f"{victim}={i % 2}", timeout=60)
                if scaled.returncode == 0:
                    acknowledged[victim] = i % 2
                    unsure.pop(victim, None)
                elif NO_LEADER not in scaled.stderr and "not the leader" not in scaled.stderr:
                    unsure.setdefault(victim, set()).add(i % 2)  # refused after it may have committed

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        for kill in range(3):
            progress = 3 * (kill + 1)
            wait_until(lambda n=progress: len(acknowledged) >= n, 60, what="the client to make progress")
            old = leader_of(managers)
            old.kill()
            leader_of([m for m in managers if m is not old])
            old.start()
    finally:
        stop.set()
        thread.join(120)
    leader = leader_of(managers)
    rows = {s["Name"]: s for s in leader.ok("service", "ls", "--format", "json").json_lines()}
    missing = sorted(set(acknowledged) - set(rows))
    assert not missing, f"acknowledged services lost: {missing} (client errors seen: {errors[:5]})"
    for name, replicas in acknowledged.items():
        allowed = {replicas} | unsure.get(name, set())
        assert desired_replicas(rows[name]) in allowed, (name, rows[name], allowed)
    for name in acknowledged:
        replicas = desired_replicas(rows[name])
        if replicas:
            wait_until(
                lambda name=name, replicas=replicas: len(leader.running(name)) == replicas,
                120,
                what=f"{name} converged to {replicas}",
            )
    # Every manager holds the same services once they catch up.
    for m in managers:
        wait_until(
            lambda m=m: (
                {s["Name"] for s in m.ok("service", "ls", "--format", "json").json_lines()} == set(rows)
            ),
            60,
            what=f"{m.name} to hold every service",
        )


def test_all_managers_stopped_and_started_keep_the_cluster(node_factory: Callable[..., ShoalNode]) -> None:
    managers, _ = three_managers(node_factory)
    m1 = managers[0]
    m1.ok("service", "create", "-d", "--name", "web", "--replicas", "2", "shoal-busybox:1", "sleep", "3600")
    wait_until(lambda: len(m1.running("web")) == 2, 60, what="web running")
    down = managers[2]
    down.stop()
    m1.ok(
        "service",
        "create",
        "-d",
        "--name",
        "while-down",
        "--replicas",
        "0",
        "shoal-busybox:1",
        "sleep",
        "3600",
    )
    for m in managers[:2]:
        m.stop()
    for m in managers:
        m.start()
    leader = leader_of(managers)
    wait_until(
        lambda: sorted(manager_status(leader).values()) == ["Leader", "Reachable", "Reachable"],
        60,
        what="all three managers back",
    )
    # The manager that was down during the write caught up with it.
    wait_until(
        lambda: (
            {s["Name"] for s in down.ok("service", "ls", "--format", "json").json_lines()}
            == {"web", "while-down"}
        ),
        60,
        what="the manager that missed a write to catch up",
    )
    wait_until(lambda: len(leader.running("web")) == 2, 90, what="web converged after the restart")


async def test_only_manager_certificates_reach_the_store_rpcs(node_factory: Callable[..., ShoalNode]) -> None:
    """A worker's valid certificate of the same swarm is refused by StoreStep and StoreJoin."""
    from shoal import identity, rpc
    from shoal.daemon.state import CERTS_DIR
    from shoal.proto import rpc_pb2 as rpb
    from shoal.roles.transport import RPCError, StatusCode, TLSMaterial
    from shoal_store_raft import wire
    from shoal_store_raft.peernet import RAFT_STEP
    from shoal_transport_grpc import GrpcTransport

    m1 = node_factory("m1").start()
    m1.init()
    w1 = node_factory("w1").start()
    w1.join(m1)
    creds = identity.load_credentials(w1.state_dir / CERTS_DIR)
    tls = TLSMaterial(root_pem=creds.root_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
    transport = GrpcTransport()
    try:
        for method, request in (
            (RAFT_STEP, wire.encode(wire.Envelope(from_member=1, batches=[b"x"]))),
            (
                rpc.STORE_JOIN,
                rpb.StoreJoinRequest(node_id=w1.node_id(), addr="127.0.0.1:1").SerializeToString(),
            ),
        ):
            try:
                await transport.call(m1.addr, method, request, tls=tls, timeout=10)
            except RPCError as exc:
                assert exc.code == StatusCode.PERMISSION_DENIED, (method, exc.code, exc.message)
                assert "swarm-manager" in exc.message
            else:
                raise AssertionError(f"{method} accepted a worker certificate")
    finally:
        await transport.close()
    assert manager_status(m1) == {"m1": "Leader", "w1": ""}


def test_either_follower_killed_writes_keep_committing_and_the_spare_is_complete(
    node_factory: Callable[..., ShoalNode],
) -> None:
    """Quorum-first replication: the leader sends new entries at once to the follower that
    acknowledges first (its quorum set) and to the other in batches. Killing the quorum-set
    follower must not stop writes (the other one takes its place), and the follower that was
    batched holds everything committed."""
    managers, _ = three_managers(node_factory)
    leader = leader_of(managers)
    followers = [m for m in managers if m is not leader]
    by_raft_id = {m.info()["Store"]["raft_id"]: m for m in followers}
    for i in range(3):
        leader.ok(
            "service", "create", "-d", "--name", f"before{i}", "--replicas", "0", "shoal-busybox:1", "true"
        )
    quorum = wait_until(
        lambda: leader.info()["Store"]["quorum_set"] or None, 30, what="the leader to pick its quorum set"
    )
    assert len(quorum) == 1 and quorum[0] in by_raft_id, quorum
    fast, spare = by_raft_id[quorum[0]], next(m for m in followers if m is not by_raft_id[quorum[0]])

    def names(node: ShoalNode) -> set[str]:
        return {s["Name"] for s in node.ok("service", "ls", "--format", "json").json_lines()}

    wait_until(lambda: names(spare) == names(leader), 10, what="the batched follower to hold every service")
    fast.kill()
    for i in range(3):
        leader.ok(
            "service", "create", "-d", "--name", f"after{i}", "--replicas", "0", "shoal-busybox:1", "true"
        )
    spare_id = spare.info()["Store"]["raft_id"]
    wait_until(
        lambda: leader.info()["Store"]["quorum_set"] == [spare_id],
        10,
        what="the remaining follower to become the quorum set",
    )
    expected = {f"before{i}" for i in range(3)} | {f"after{i}" for i in range(3)}
    assert names(leader) == expected
    wait_until(lambda: names(spare) == expected, 10, what="the remaining follower to hold every service")
    # The killed follower comes back, catches up and is sent entries again.
    fast.start()
    leader.ok("service", "create", "-d", "--name", "back", "--replicas", "0", "shoal-busybox:1", "true")
    wait_until(lambda: names(fast) == expected | {"back"}, 30, what="the restarted follower to catch up")
