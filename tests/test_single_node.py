"""A one-node cluster on each real engine: replicas, scaling, self-healing, daemon restarts."""

from __future__ import annotations

import signal
import time

import pytest
from engines import Engine
from harness import RUNTIMES, TEST_IMAGE, ShoalNode, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.engine]


def start_cluster(node_factory: object, runtime_name: str) -> ShoalNode:
    node: ShoalNode = node_factory(runtime=runtime_name)  # type: ignore[operator]
    node.start()
    node.init()
    wait_until(lambda: node.info().get("AgentConnected"), 20, what="the agent to open its session")
    return node


def replicas_column(node: ShoalNode, service: str) -> str:
    rows = [r for r in node.ok("service", "ls", "--format", "json").json_lines() if r["Name"] == service]
    return str(rows[0]["Replicas"]) if rows else ""


@pytest.mark.parametrize(
    ("runtime_name", "store"),
    [*((runtime, "raft") for runtime in RUNTIMES), ("docker", "etcd")],
    indirect=["store"],
)
def test_replicas_scale_and_remove(node_factory: object, runtime_name: str, engine: Engine) -> None:
    node = start_cluster(node_factory, runtime_name)
    node_id = node.node_id()
    # Stop grace 0 s: the image's PID 1 ignores SIGTERM, so scale-down and rm would each wait
    # out the default 10 s before the engine kills it.
    node.ok(
        "service", "create", "--name", "web", "--replicas", "4", "--stop-grace-period", "0s", "--detach",
        TEST_IMAGE,
    )  # fmt: skip

    def containers() -> list[object]:
        return engine.service_containers(node_id, "web")

    wait_until(
        lambda: len(containers()) == 4 and replicas_column(node, "web") == "4/4",
        60,
        what="4 running containers and 4/4",
    )
    for container in engine.service_containers(node_id, "web"):
        assert container.labels["io.shoal.service.name"] == "web"
        assert container.labels["io.shoal.node.id"] == node_id
        assert container.labels["io.shoal.task.id"]
        assert container.labels["io.shoal.service.id"]

    node.ok("service", "scale", "--detach", "web=6")
    wait_until(lambda: len(containers()) == 6 and replicas_column(node, "web") == "6/6", 60, what="6/6")

    node.ok("service", "scale", "--detach", "web=2")
    wait_until(lambda: replicas_column(node, "web") == "2/2", 60, what="2/2")
    wait_until(lambda: len(containers()) == 2, 60, what="only 2 running containers left")

    node.ok("service", "rm", "web")
    wait_until(
        lambda: not engine.service_containers(node_id, "web", running_only=False),
        60,
        what="every container of the service removed",
    )
    assert node.ok("service", "ls", "-q").stdout.strip() == ""


def test_killed_container_is_replaced_after_restart_delay(
    node_factory: object, runtime_name: str, engine: Engine
) -> None:
    node = start_cluster(node_factory, runtime_name)
    node_id = node.node_id()
    node.ok(
        "service",
        "create",
        "--name",
        "heal",
        "--replicas",
        "2",
        "--restart-delay",
        "2s",
        "--detach",
        TEST_IMAGE,
    )
    wait_until(lambda: replicas_column(node, "heal") == "2/2", 60, what="2/2")
    victim = engine.service_containers(node_id, "heal")[0]
    victim_task = victim.labels["io.shoal.task.id"]
    # Taken before the kill: the container may die (and the delay start) before the CLI returns.
    killed_at = time.monotonic()
    engine.kill(victim.id)

    def failed() -> bool:
        return any(
            t["ID"] == victim_task and t["CurrentState"].startswith("Failed") for t in node.tasks("heal")
        )

    wait_until(failed, 30, what="the killed task to be reported Failed")

    def healed() -> bool:
        running = node.running("heal")
        return len(running) == 2 and victim_task not in {t["ID"] for t in running}

    wait_until(healed, 60, what="2/2 again with a replacement task")
    assert time.monotonic() - killed_at >= 2.0, "the replacement must wait for the restart delay"
    history = [t for t in node.tasks("heal") if t["ID"] == victim_task]
    assert history and history[0]["DesiredState"] == "Shutdown"
    assert "non-zero exit" in history[0]["Error"]
    assert len(engine.service_containers(node_id, "heal")) == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_daemon_restart_readopts_containers(
    node_factory: object, runtime_name: str, engine: Engine, sig: int
) -> None:
    node = start_cluster(node_factory, runtime_name)
    node_id = node.node_id()
    node.ok("service", "create", "--name", "keep", "--replicas", "3", "--detach", TEST_IMAGE)
    wait_until(lambda: replicas_column(node, "keep") == "3/3", 60, what="3/3")
    before = {c.id for c in engine.service_containers(node_id, "keep")}
    tasks_before = {t["ID"] for t in node.running("keep")}
    assert len(before) == 3

    node.stop(sig)
    assert {c.id for c in engine.service_containers(node_id, "keep")} == before, "containers keep running"
    node.start()
    wait_until(lambda: node.info().get("AgentConnected"), 30, what="the agent to reconnect")
    wait_until(lambda: replicas_column(node, "keep") == "3/3", 60, what="3/3 after restart")
    # Give the orchestrator and agent a moment in which a duplicate would show up, bounded by
    # conditions rather than a sleep: the task set must stay the same across several polls.
    for _ in range(10):
        assert {t["ID"] for t in node.running("keep")} == tasks_before
        all_containers = engine.service_containers(node_id, "keep", running_only=False)
        assert {c.id for c in all_containers} == before, "no container duplicated or orphaned"
    assert node.ok("service", "ls", "-q").stdout.split() != []


def test_missing_image_is_rejected_with_engine_message(
    node_factory: object, runtime_name: str, engine: Engine
) -> None:
    node = start_cluster(node_factory, runtime_name)
    node.ok("service", "create", "--name", "ghost", "--pull", "never", "--detach", "shoal-no-such-image:1")

    def rejected() -> list[dict[str, str]]:
        return [t for t in node.tasks("ghost") if t["CurrentState"].startswith("Rejected")]

    task = wait_until(rejected, 60, what="the task to be Rejected")[0]
    assert "shoal-no-such-image" in task["Error"] or "no such image" in task["Error"].lower()
    result = node.cli("service", "create", "--name", "ghost2", "--pull", "never", "shoal-no-such-image:1")
    assert result.returncode == 1
    assert "did not converge" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_service_logs(node_factory: object, runtime_name: str, engine: Engine) -> None:
    node = start_cluster(node_factory, runtime_name)
    node.ok(
        "service",
        "create",
        "--name",
        "talk",
        "--replicas",
        "2",
        "--detach",
        TEST_IMAGE,
        "sh",
        "-c",
        "echo hello-from-$(hostname); echo oops >&2; sleep 3600",
    )
    wait_until(lambda: len(node.running("talk")) == 2, 60, what="2 running")

    def lines() -> list[str]:
        out = node.ok("service", "logs", "talk")
        return [line for line in (out.stdout + out.stderr).splitlines() if "hello-from-" in line]

    found = wait_until(lambda: len(lines()) == 2 and lines(), 30, what="a hello line from each task")
    assert all(line.startswith("talk.") and "@node1" in line and "| hello-from-" in line for line in found)
    raw = node.ok("service", "logs", "--raw", "talk").stdout.splitlines()
    assert sorted(line for line in raw if line.startswith("hello-from-")) == sorted(
        line.split("| ", 1)[1] for line in found
    )
    tail = node.ok("service", "logs", "--tail", "1", "--raw", "talk")
    assert len((tail.stdout + tail.stderr).splitlines()) == 2  # one line per task
