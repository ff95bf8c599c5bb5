"""Issue 17 items 2 and 6 on real daemons: service templates expanded per task on the node
that runs it, and ``--filter`` on the lists, through the CLI, on a manager and a worker."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from harness import TEST_IMAGE, ShoalNode, start_cluster, wait_until

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]


def test_templates_are_expanded_on_the_worker_and_lists_filter(node_factory: Factory) -> None:
    manager, (worker,) = start_cluster(node_factory, "w1")

    # An unknown placeholder: one line naming it and the valid ones, nothing stored.
    bad = manager.cli(
        "service", "create", "--name", "typo", "--detach", "--hostname", "{{.Node.Name}}", TEST_IMAGE, "true"
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == "", bad
    assert bad.stderr.count("\n") == 1 and 'unknown placeholder "{{.Node.Name}}"' in bad.stderr, bad
    assert "{{.Node.Hostname}}" in bad.stderr
    assert "typo" not in manager.ok("service", "ls").stdout

    manager.ok(
        "service", "create", "--name", "tmpl", "--detach", "--constraint", "node.role==worker",
        "--hostname", "{{.Node.Hostname}}-{{.Task.Slot}}", "--env", "WHO={{.Service.Name}}.{{.Task.Slot}}",
        "--mount", "type=tmpfs,target=/scratch/{{.Task.Slot}}",
        TEST_IMAGE, "sh", "-c", 'echo "$(hostname) $WHO $(ls /scratch)"; exec sleep 3600',
    )  # fmt: skip
    wait_until(lambda: manager.running("tmpl"), 60, what="the templated task to run on the worker")

    def output() -> str | None:
        text = manager.ok("service", "logs", "--raw", "tmpl").stdout.strip()
        return text or None

    assert wait_until(output, 30, what="the task's output") == "w1-1 tmpl.1 1"
    stored = json.loads(manager.ok("service", "inspect", "tmpl").stdout)[0]["Spec"]["TaskTemplate"]
    hostname = stored["ContainerSpec"]["Hostname"]
    assert hostname == "{{.Node.Hostname}}-{{.Task.Slot}}"  # the spec keeps the template

    # Filters, done by the manager: a key twice is OR, two keys AND; a bad key is one line.
    manager.ok(
        "service",
        "create",
        "--name",
        "other",
        "--detach",
        "--label",
        "tier=back",
        TEST_IMAGE,
        "sleep",
        "3600",
    )
    ls = ["service", "ls", "--format", "{{.Name}}"]
    assert manager.ok(*ls, "--filter", "name=tm").stdout.split() == ["tmpl"]
    assert manager.ok(*ls, "-f", "label=tier=back").stdout.split() == ["other"]
    assert manager.ok(*ls, "-f", "name=tm", "-f", "name=ot").stdout.split() == ["other", "tmpl"]
    (worker_row,) = manager.ok("node", "ls", "-q", "-f", "role=worker").stdout.split()
    assert worker.node_id().startswith(worker_row)
    on_worker = manager.ok(
        "service", "ps", "-q", "--no-trunc", "-f", "node=w1", "-f", "desired-state=running", "tmpl", "other"
    )
    assert on_worker.stdout.split() == [t["ID"] for t in manager.running("tmpl")]
    refused = manager.cli("service", "ls", "--filter", "colour=red")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "service ls takes id, label, mode, name" in refused.stderr
