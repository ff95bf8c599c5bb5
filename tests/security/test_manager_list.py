"""Issue 13, defect 4: a worker keeps the managers' list its sessions give, not only the join
address, so a restart while the manager it joined through is down still finds the swarm."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from harness import TEST_IMAGE, ShoalNode, wait_until

pytestmark = [pytest.mark.cluster]


def saved_managers(node: ShoalNode) -> list[str]:
    """The managers' addresses recorded in the node's state.json."""
    path = node.state_dir / "state.json"
    return list(json.loads(path.read_text())["managers"]) if path.exists() else []


def test_restarted_worker_reaches_the_other_managers_when_its_join_manager_is_down(
    node_factory: Callable[..., ShoalNode],
) -> None:
    m1, m2, m3 = (node_factory(f"m{i}").start() for i in range(1, 4))
    m1.init()
    m2.join(m1, "manager")
    worker = node_factory("w1").start()
    worker.join(m1)
    # A manager that joins after the worker: the worker learns of it from its session.
    m3.join(m1, "manager")
    everyone = {m1.addr, m2.addr, m3.addr}
    wait_until(
        lambda: set(saved_managers(worker)) == everyone,
        30,
        what="the worker to record every manager's address in its state",
    )

    worker.stop()
    m1.stop()
    worker.start()
    wait_until(
        lambda: worker.info()["AgentConnected"],
        60,
        what="the restarted worker to open a session through a manager other than m1",
    )
    m2.ok(
        "service",
        "create",
        "-d",
        "--name",
        "after",
        "--constraint",
        "node.role==worker",
        TEST_IMAGE,
        "sleep",
        "3600",
    )
    wait_until(lambda: len(m2.running("after")) == 1, 90, what="a task running on the restarted worker")
    rows = m2.ok("node", "ls", "--format", "json").json_lines()
    assert {r["Hostname"]: r["Status"] for r in rows}["w1"] == "Ready"
    # The list it keeps now starts with the leader it found (the leader hint for its next start).
    wait_until(
        lambda: saved_managers(worker)[:1] in ([m2.addr], [m3.addr]),
        30,
        what="the worker's saved list to start with the new leader",
    )
    # A manager that is demoted leaves the list the worker keeps.
    m2.ok("node", "demote", "m1")
    wait_until(
        lambda: set(saved_managers(worker)) == {m2.addr, m3.addr},
        30,
        what="the demoted manager to leave the worker's saved list",
    )
