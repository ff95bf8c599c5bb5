"""Issue 13, defect 7: bad input is refused before any change, in one line, as docker does.

One real daemon; each bad command must exit non-zero with exactly one line on stderr and no
traceback, and afterwards the cluster (services, the service's spec, the swarm's spec) must be
exactly as before. The same refusals hold for a scripted call over the socket, since the
validation is the manager's, not the CLI's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import TEST_IMAGE, ShoalNode
from shoal.client import Client, ClientError

pytestmark = [pytest.mark.cluster]

HUGE = "99999999999999999999999"
LONG_HOSTNAME = "h" * 300

BAD_COMMANDS: list[tuple[list[str], str]] = [
    # numbers out of range or not numbers
    (["service", "create", "--detach", "--name", "a", "--replicas", HUGE, TEST_IMAGE], "--replicas"),
    (["service", "scale", "--detach", f"keep={HUGE}"], "replicas"),
    (["service", "update", "--detach", "--replicas", HUGE, "keep"], "--replicas"),
    (["service", "create", "--detach", "--name", "a", "--update-parallelism", HUGE, TEST_IMAGE], "--update"),
    (["service", "create", "--detach", "--name", "a", "--limit-cpu", "nan", TEST_IMAGE], "--limit-cpu"),
    (["service", "create", "--detach", "--name", "a", "--limit-memory", "9" * 400, TEST_IMAGE], "--limit"),
    (
        ["service", "create", "--detach", "--name", "a", "--restart-delay", "9" * 40 + "h", TEST_IMAGE],
        "delay",
    ),
    (["swarm", "update", "--task-history-limit", HUGE], "--task-history-limit"),
    (["swarm", "update", "--election-tick", HUGE], "--election-tick"),
    (["swarm", "update", "--cert-expiry", "9" * 40 + "h"], "--cert-expiry"),
    # strings docker validates
    (["service", "create", "--detach", "--name", "a", "SEARCHSVC:V1.0"], "invalid image reference"),
    (["service", "update", "--detach", "--image", "SEARCHSVC:V1.0", "keep"], "invalid image reference"),
    (["service", "update", "--detach", "--image", "", "keep"], "--image"),
    (
        ["service", "create", "--detach", "--name", "a", "--stop-signal", "SIGNOPE", TEST_IMAGE],
        "--stop-signal",
    ),
    (["service", "update", "--detach", "--stop-signal", "SIGNOPE", "keep"], "--stop-signal"),
    (["service", "create", "--detach", "--name", "a", "--hostname", LONG_HOSTNAME, TEST_IMAGE], "--hostname"),
    (["service", "update", "--detach", "--hostname", LONG_HOSTNAME, "keep"], "--hostname"),
    (["service", "create", "--detach", "--name", "a", "--workdir", "srv", TEST_IMAGE], "absolute path"),
    # empty references are mistakes, not "self"
    (["node", "inspect", ""], "node ID or name is required"),
    (["node", "update", "--availability", "drain", ""], "node ID or name is required"),
    (["node", "ps", ""], "node ID or name is required"),
    (["node", "update", "--availability", "", "self"], "--availability"),
    (["node", "rm", ""], "node ID or name is required"),
    (["service", "inspect", ""], "service ID or name is required"),
    (["service", "ps", ""], "service ID or name is required"),
    (["service", "rm", ""], "service ID or name is required"),
    (["service", "update", "--detach", "--replicas", "2", ""], "service ID or name is required"),
    # templates that do not parse or name no field
    (["service", "ls", "--format", "{{.Nope}}"], 'no field "Nope"'),
    (["service", "ls", "--format", "{{"], "unclosed action"),
    (["node", "ls", "--format", "{{.Nope}}"], 'no field "Nope"'),
    (["service", "ps", "keep", "--format", "{{"], "unclosed action"),
    (["info", "--format", "{{.Nope}}"], 'no field "Nope"'),
]


def state(node: ShoalNode) -> dict[str, Any]:
    """What a bad command must not change: the services, their specs, the swarm's spec."""
    client = Client(f"unix://{node.socket}", timeout=30)
    return {
        "ls": node.ok("service", "ls", "--format", "json").json_lines(),
        "services": client.call("service.inspect", services=["keep"]),
        "swarm": client.call("swarm.inspect")["spec"],
        "nodes": [
            {k: v for k, v in n.items() if k not in ("status", "meta", "description")}
            for n in client.call("node.inspect", nodes=["self"])
        ],
    }


def test_bad_input_is_one_line_nonzero_and_changes_nothing(node_factory: Any) -> None:
    node: ShoalNode = node_factory()
    node.start()
    client = Client(f"unix://{node.socket}", timeout=30)
    for params in ({"external_cas": 5}, {"external_cas": [{"url": "x"}]}, {"plugins": "scheduler=spread"}):
        with pytest.raises(ClientError) as refused:
            client.call("swarm.init", **params)
        assert refused.value.code == "INVALID_ARGUMENT", (params, refused.value.message)
    empty = node.cli("swarm", "init", "--availability", "")
    assert empty.returncode == 2 and "--availability" in empty.stderr, empty.stderr
    assert node.info()["Swarm"] == "inactive"
    node.init()
    node.ok("service", "create", "--detach", "--name", "keep", "--replicas", "0", TEST_IMAGE)
    before = state(node)
    failures = []
    for args, expected in BAD_COMMANDS:
        result = node.cli(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if (
            result.returncode == 0
            or len(lines) != 1
            or "Traceback" in result.stderr
            or "internal error" in result.stderr
            or expected not in lines[0]
        ):
            failures.append(f"{args[:4]}...: exit {result.returncode}, stderr {result.stderr[-300:]!r}")
    assert not failures, "\n".join(failures)

    for method, params in (
        ("service.create", {"name": "b", "image": TEST_IMAGE, "replicas": 10**30}),
        ("service.create", {"name": "b", "image": TEST_IMAGE, "replicas": 1.5}),
        ("service.create", {"name": "b", "image": TEST_IMAGE, "env": "A=1"}),
        ("service.scale", {"service": "keep", "replicas": -1}),
        ("node.rm", {"nodes": "self"}),
        ("node.promote", {"nodes": "self"}),
        ("node.demote", {"nodes": 7}),
        ("service.logs", {"service": "keep", "tail": "many"}),
    ):
        with pytest.raises(ClientError) as refused:
            if method == "service.logs":
                list(client.stream(method, **params))
            else:
                client.call(method, **params)
        assert refused.value.code == "INVALID_ARGUMENT", (method, params, refused.value.message)

    assert state(node) == before
    assert "Traceback" not in node.log_text()

    # docker's meaning, kept: a negative task history limit means "never delete task history".
    node.ok("swarm", "update", "--task-history-limit", "-1")
    swarm = json.loads(json.dumps(client.call("swarm.inspect")))
    assert swarm["spec"]["orchestration"]["task_history_retention_limit"] == "-1"
