"""Issue 17, CLI parity with docker on real daemons: shell-quoted ``--args``/``--entrypoint``,
the readable ``shoal info`` block, and ``service logs`` of tasks on other nodes."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from harness import SHOAL, TEST_IMAGE, ShoalNode, start_cluster, wait_until

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]


def test_shell_quoted_args_and_info_block(node_factory: Factory) -> None:
    node = node_factory().start()
    node.init()
    node.ok("service", "create", "--name", "quoted", "--detach", TEST_IMAGE, "true")

    node.ok("service", "update", "--detach", "--args", "sh -c 'sleep 1000'", "quoted")
    node.ok("service", "update", "--detach", "--entrypoint", "/bin/env 'A=b c'", "quoted")
    shape = json.loads(node.ok("service", "inspect", "quoted").stdout)[0]
    container = shape["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert container["Args"] == ["sh", "-c", "sleep 1000"]
    assert container["Command"] == ["/bin/env", "A=b c"]

    bad = node.cli("service", "update", "--detach", "--args", "sh -c 'sleep", "quoted")
    assert bad.returncode == 2 and bad.stdout == ""
    assert (
        bad.stderr.count("\n") == 1 and 'invalid --args "sh -c \'sleep": no closing quotation' in bad.stderr
    )
    after = json.loads(node.ok("service", "inspect", "quoted").stdout)[0]["Spec"]["TaskTemplate"]
    assert after["ContainerSpec"]["Args"] == ["sh", "-c", "sleep 1000"]

    text = node.ok("info").stdout
    assert "{" not in text and "[" not in text, text  # no Python reprs
    lines = text.splitlines()
    assert lines[0] == "Swarm: active"
    for expected in (
        f" NodeID: {node.node_id()}",
        " Is Manager: true",
        " Managers: 1",
        " Nodes: 1",
        "  Task History Retention Limit: 5",
        "  Heartbeat Period: 5 seconds",
        "  Expiry Duration: 3 months",
        " Is Leader: true",
        " scheduler: spread",
    ):
        assert expected in lines, (expected, text)
    assert json.loads(node.ok("info", "--format", "json").stdout)["Cluster"]["Nodes"] == 1
    assert node.ok("info", "--format", "{{.Role}}").stdout.strip() == "manager"


def test_service_logs_come_from_the_node_running_the_task(node_factory: Factory) -> None:
    manager, (worker,) = start_cluster(node_factory, "w1")
    worker_id = worker.node_id()
    manager.ok(
        "service", "create", "--name", "chatty", "--detach", "--constraint", "node.role==worker",
        TEST_IMAGE, "sh", "-c", "echo hello from the worker; echo second line; exec sleep 3600",
    )  # fmt: skip
    wait_until(lambda: manager.running("chatty"), 60, what="the task to run on the worker")
    assert {t["Node"] for t in manager.running("chatty")} == {"w1"}

    def logs() -> list[str] | None:
        result = manager.ok("service", "logs", "chatty")
        lines = result.stdout.splitlines()
        return lines if len(lines) == 2 else None

    lines = wait_until(logs, 30, what="the worker's task output through the manager")
    assert [line.split(" | ", 1)[1] for line in lines] == ["hello from the worker", "second line"]
    assert all(line.startswith("chatty.1.") and "@w1 " in line for line in lines), lines
    raw = manager.ok("service", "logs", "--raw", "--tail", "1", "chatty").stdout
    assert raw == "second line\n"

    # -t: docker's fixed-width RFC3339Nano stamp first; --since drops older lines on the worker.
    stamped = manager.ok("service", "logs", "-t", "chatty").stdout.splitlines()
    stamps = [line.split(" ", 1)[0] for line in stamped]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", s) for s in stamps), stamped
    assert [line.split(" ", 1)[1].split(" | ", 1)[1] for line in stamped] == [
        "hello from the worker",
        "second line",
    ]
    assert manager.ok("service", "logs", "--since", "10m", "chatty").stdout.splitlines() == lines
    later = manager.ok("service", "logs", "--raw", "--since", stamps[1], "chatty").stdout.splitlines()
    assert later == (["second line"] if stamps[0] < stamps[1] else ["hello from the worker", "second line"])
    future = datetime.fromisoformat(stamps[1][:26]).replace(tzinfo=UTC) + timedelta(hours=1)
    assert manager.ok("service", "logs", "--since", future.isoformat(), "chatty").stdout == ""
    bad = manager.cli("service", "logs", "--since", "nonsense", "chatty")
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1, bad

    # -f follows a task that starts later, on the worker too.
    following = subprocess.Popen(
        [*SHOAL, "service", "logs", "-f", "chatty"], stdout=subprocess.PIPE, text=True, env=manager.env()
    )
    followed: list[str] = []
    reader = threading.Thread(
        target=lambda: followed.extend(iter(following.stdout.readline, "")), daemon=True
    )  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until(lambda: len(followed) >= 2, 30, what="the backlog through -f")
        manager.ok("service", "scale", "--detach", "chatty=2")
        wait_until(
            lambda: any(line.startswith("chatty.2.") and "@w1 " in line for line in followed),
            60,
            what="the new task's output through -f",
        )
    finally:
        following.terminate()
        following.wait(10)
        reader.join(10)

    # The worker gone: its logs cannot be had; one warning naming it, exit 1 as docker's
    # "incomplete log stream" error.
    worker.stop()
    gone = manager.cli("service", "logs", "chatty")
    assert gone.returncode == 1 and gone.stdout == "", gone
    warnings = gone.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: incomplete log stream: node w1"), warnings
    assert worker_id in warnings[0]
