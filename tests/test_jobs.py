"""Issue 17 item 8: Swarm jobs on real daemons and real engines.

A replicated job (docker and podman) and a global job (docker, manager + worker) run a
busybox task that exits 0: ``service create`` without ``-d`` waits for docker's ``job
complete``, ``service ps`` shows the tasks Complete (desired and current), ``service ls`` shows
docker's MODE and ``N/M (K/L completed)``. The logic (max-concurrent, retries, nodes joining,
re-runs) is proved fast in core/tests/test_jobs_logic.py.
"""

from __future__ import annotations

from collections.abc import Callable

from harness import TEST_IMAGE, ShoalNode, start_cluster, wait_until

Factory = Callable[..., ShoalNode]


def ls_columns(node: ShoalNode, name: str) -> list[str]:
    """The MODE and REPLICAS cells of ``service ls`` for ``name``."""
    out = node.ok("service", "ls", "--format", "{{.Mode}}|{{.Replicas}}", "--filter", f"name={name}").stdout
    return out.strip().split("|")


def ps_states(node: ShoalNode, name: str, count: int) -> list[tuple[str, str]]:
    """``service ps`` DESIRED and CURRENT STATE, once ``count`` tasks are Complete in both
    (the manager marks a task's desired state just after the agent reports it finished)."""

    def complete() -> list[tuple[str, str]] | None:
        out = node.ok("service", "ps", name, "--format", "{{.DesiredState}}|{{.CurrentState}}").stdout
        rows = [line.partition("|")[::2] for line in out.strip().splitlines()]
        done = [(d, c) for d, c in rows if d == "Complete" and c.startswith("Complete")]
        return done if len(done) == count == len(rows) else None

    return wait_until(complete, timeout=30, what=f"{count} tasks of {name} Complete")


def test_replicated_job_completes(node_factory: Factory, runtime_name: str) -> None:
    node = node_factory(runtime=runtime_name).start()
    node.init()
    created = node.ok(
        "service", "create", "--name", "batch", "--mode", "replicated-job", "--replicas", "2",
        "--max-concurrent", "1", TEST_IMAGE, "sh", "-c", "echo done; exit 0",
    )  # fmt: skip
    assert created.stdout.strip().endswith("job complete"), created.stdout
    ps_states(node, "batch", 2)
    assert ls_columns(node, "batch") == ["replicated job", "0/0 (2/2 completed)"]
    rerun = node.ok("service", "update", "--force", "batch")  # a new run of the job
    assert rerun.stdout.strip().endswith("job complete"), rerun.stdout
    ps_states(node, "batch", 4)
    assert ls_columns(node, "batch") == ["replicated job", "0/0 (2/2 completed)"]
    refused = node.cli("service", "create", "--name", "bad", "--max-concurrent", "2", TEST_IMAGE)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "Error: --max-concurrent can only be used with replicated-job mode"
    ], refused.stderr


def test_global_job_completes_on_every_node(node_factory: Factory) -> None:
    manager, _ = start_cluster(node_factory, "w1")
    created = manager.ok("service", "create", "--name", "once", "--mode", "global-job", TEST_IMAGE, "true")
    assert created.stdout.strip().endswith("job complete"), created.stdout
    ps_states(manager, "once", 2)
    assert ls_columns(manager, "once") == ["global job", "0/0 (2/2 completed)"]
    refused = manager.cli("service", "scale", "once=3")
    assert refused.returncode != 0 and "scale can only be used with replicated or replicated-job mode" in (
        refused.stderr
    )
