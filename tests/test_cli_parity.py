"""Issue 17, CLI parity with docker on real daemons: shell-quoted ``--args``/``--entrypoint``,
the readable ``shoal info`` block, and ``service logs`` of tasks on other nodes."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from harness import TEST_IMAGE, ShoalNode

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]


def test_shell_quoted_args_and_info_block(node_factory: Factory) -> None:
    node = node_factory().start()
    node.init()
    node.ok("service", "create", "--name", "quoted", "--detach", TEST_IMAGE, "true")

    node.ok("service", "update", "--detach", "--args", "sh -c 'sleep 1000'", "quoted")
    node.ok("service", "update", "--detach", "--entrypoint", "/bin/env 'A=b c'", "quoted")
    container = json.loads(node.ok("service", "inspect", "quoted").stdout)[0]["spec"]["task"]["container"]
    assert container["args"] == ["sh", "-c", "sleep 1000"]
    assert container["command"] == ["/bin/env", "A=b c"]

    bad = node.cli("service", "update", "--detach", "--args", "sh -c 'sleep", "quoted")
    assert bad.returncode == 2 and bad.stdout == ""
    assert (
        bad.stderr.count("\n") == 1 and 'invalid --args "sh -c \'sleep": no closing quotation' in bad.stderr
    )
    after = json.loads(node.ok("service", "inspect", "quoted").stdout)[0]["spec"]["task"]["container"]
    assert after["args"] == ["sh", "-c", "sleep 1000"]

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
