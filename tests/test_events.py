"""Issue 17, item 9: ``shoal events`` on a real cluster (a manager and a worker, mutual TLS).

A live ``shoal events`` sees a service's create, update and remove, a secret's, and a node's
state change as docker reports them; afterwards ``--since/--until`` replays them from the
manager's ring and ends by itself, ``--filter`` narrows with docker's rules, and ``--format``
prints docker's JSON or a template.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from harness import SHOAL, TEST_IMAGE, ShoalNode, start_cluster, terminate, wait_until

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]


class Follower:
    """A ``shoal events --format json`` running in the background, its events collected."""

    def __init__(self, node: ShoalNode, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*SHOAL, "events", "--format", "json", *args], stdout=subprocess.PIPE, text=True, env=node.env()
        )
        self.events: list[dict[str, object]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def seen(self) -> list[tuple[object, ...]]:
        return [(e["Type"], e["Action"], e["Actor"]["Attributes"].get("name")) for e in list(self.events)]  # type: ignore[index, union-attr]

    def close(self) -> None:
        terminate(self.proc)  # type: ignore[arg-type]


def test_events_live_then_replayed_filtered_and_formatted(node_factory: Factory) -> None:
    manager, (worker,) = start_cluster(node_factory, "w1")
    start = time.time()
    # --since: the ring's events from then on first, so nothing is missed while it connects.
    follower = Follower(manager, "--since", f"{start:.3f}")
    try:
        subprocess.run(
            [*SHOAL, "secret", "create", "probe", "-"],
            input="s3cret",
            text=True,
            env=manager.env(),
            check=True,
        )
        manager.ok("service", "create", "--name", "web", "--detach", TEST_IMAGE, "sleep", "3600")
        manager.ok("service", "update", "--detach", "--replicas", "2", "web")
        manager.ok("service", "rm", "web")
        manager.ok("network", "create", "--driver", "overlay", "backend")  # a kind added later
        manager.ok("network", "rm", "backend")
        # A worker holds no store and no ring: one line saying so.
        on_worker = worker.cli("events", "--since", "1m", "--until", "0s")
        assert on_worker.returncode == 1 and on_worker.stdout == "", on_worker
        assert on_worker.stderr.count("\n") == 1 and "not a swarm manager" in on_worker.stderr, (
            on_worker.stderr
        )
        worker.kill()  # the manager marks it down: a node update with state.new=down
        wanted = [
            ("secret", "create", "probe"),
            ("service", "create", "web"),
            ("service", "update", "web"),
            ("service", "remove", "web"),
            ("network", "create", "backend"),
            ("network", "remove", "backend"),
        ]
        wait_until(lambda: all(w in follower.seen() for w in wanted), 60, what=f"{wanted} live")
        wait_until(
            lambda: any(
                e["Type"] == "node" and e["Actor"]["Attributes"].get("state.new") == "down"  # type: ignore[index, union-attr]
                for e in list(follower.events)
            ),
            60,
            what="the worker's node update with state.new=down",
        )
    finally:
        follower.close()
    scaled = [e for e in follower.events if e["Actor"]["Attributes"].get("replicas.new") == "2"]  # type: ignore[index, union-attr]
    assert scaled and scaled[0]["Actor"]["Attributes"]["replicas.old"] == "1", follower.events  # type: ignore[index]
    assert {e["scope"] for e in follower.events} == {"swarm"}

    # Replayed from the ring: --since/--until end by themselves, in docker's line format.
    until = time.time()
    replay = manager.ok("events", "--since", f"{start:.3f}", "--until", f"{until:.3f}", timeout=30)
    lines = replay.stdout.splitlines()
    service_lines = [line for line in lines if " service " in line]
    assert len(service_lines) >= 3, lines
    stamp, kind, action, _, attrs = service_lines[0].split(" ", 4)
    assert (kind, action, attrs) == ("service", "create", "(name=web)"), service_lines[0]
    # docker's RFC3339NanoFixed in the local zone: nine fraction digits, Z or +HH:MM
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d)", stamp), stamp
    relative = manager.ok("events", "--since", "10m", "--until", "0s", "--filter", "type=service", timeout=30)
    actions = [line.split(" ")[2] for line in relative.stdout.splitlines()]
    assert actions[0] == "create" and actions[-1] == "remove" and "update" in actions, relative.stdout
    assert all(line.split(" ")[1] == "service" for line in relative.stdout.splitlines()), relative.stdout

    removed = manager.ok(
        "events", "--since", f"{start:.3f}", "--until", f"{until:.3f}",
        "--filter", "event=remove", "--filter", "service=web",
        "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        timeout=30,
    )  # fmt: skip
    assert removed.stdout.splitlines() == ["service remove web"], removed.stdout

    bad = manager.cli("events", "--filter", "colour=red", "--until", "0s")
    assert bad.returncode == 2 and bad.stdout == "", bad
    assert bad.stderr.count("\n") == 1 and 'invalid --filter "colour=red"' in bad.stderr, bad.stderr
    bad_time = manager.cli("events", "--since", "yesterday")
    assert bad_time.returncode == 2 and 'invalid --since "yesterday"' in bad_time.stderr, bad_time.stderr


def test_events_on_a_follower_survive_a_leader_change(node_factory: Factory) -> None:
    """Any manager serves events from its own ring: a follower reports what the leader wrote,
    and after the leader dies it still has those events and adds the new leader's."""
    managers = [node_factory(f"m{i}").start() for i in range(1, 4)]
    m1, m2, m3 = managers
    m1.init()
    m2.join(m1, "manager")
    m3.join(m1, "manager")
    m1.ok("swarm", "update", "--raft-tick", "50ms", "--election-tick", "20")  # a quick election
    start = time.time()
    m1.ok("service", "create", "--name", "before", "--detach", TEST_IMAGE, "sleep", "3600")

    def service_events(node: ShoalNode) -> list[str]:
        result = node.cli(
            "events", "--since", f"{start:.3f}", "--until", "0s", "--filter", "type=service",
            "--format", "{{.Action}} {{.Actor.Attributes.name}}",
        )  # fmt: skip
        return result.stdout.splitlines() if result.returncode == 0 else []

    wait_until(lambda: "create before" in service_events(m2), 30, what="m2 to report the leader's create")
    m1.kill()

    def create_after() -> bool:
        result = m2.cli("service", "create", "--name", "after", "--detach", TEST_IMAGE, "sleep", "3600")
        return result.returncode == 0 or "already exists" in result.stderr  # an answer lost in the failover

    wait_until(create_after, 60, interval=0.5, what="a new leader to take the create")
    for node in (m2, m3):
        seen = wait_until(
            lambda node=node: (events := service_events(node)) and "create after" in events and events,
            30,
            what=f"{node.name} to report both creates",
        )
        assert seen.index("create before") < seen.index("create after"), seen
