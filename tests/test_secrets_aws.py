"""The aws secrets driver end to end: a real daemon, a real engine, and moto's server as a real
Secrets Manager API over verified HTTPS. The leader fetches the value when it assigns a task;
with the backend down a new task fails with a line naming the backend, and nothing else breaks.
"""

from __future__ import annotations

import secrets as random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from harness import TEST_IMAGE, ShoalNode, wait_until
from shoal_secrets_aws.testing import TEST_ENV, MotoServer

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path / "moto").start()
    yield server
    server.stop()


@pytest.fixture
def node(node_factory: Factory, moto: MotoServer) -> Iterator[ShoalNode]:
    """One daemon whose aws driver points at ``moto``; its secrets tmpfs are unmounted after."""
    options = [
        arg for key, value in moto.options().items() for arg in ("--plugin-opt", f"secrets.{key}={value}")
    ]
    node = node_factory(name="aws1", extra_args=options, env=TEST_ENV).start()
    yield node
    for line in Path("/proc/mounts").read_text().splitlines():
        if str(node.state_dir) in line:
            subprocess.run(["umount", "-l", line.split()[1]], check=False)


def container_output(service: str) -> list[str]:
    api = docker.APIClient()
    found = api.containers(filters={"label": f"io.shoal.service.name={service}"})
    return api.logs(found[0]["Id"]).decode().splitlines() if found else []


def test_aws_secret_is_fetched_by_the_leader_and_a_dead_backend_fails_only_its_task(
    node: ShoalNode, moto: MotoServer, tmp_path: Path
) -> None:
    node.init()
    value = f"aws-{random.token_hex(16)}".encode()
    (tmp_path / "value").write_bytes(value)
    node.ok("secret", "create", "--driver", "aws", "db", str(tmp_path / "value"))
    node.ok("secret", "create", "--driver", "aws", "db2", str(tmp_path / "value"))
    rows = node.ok("secret", "ls", "--format", "json").json_lines()
    assert sorted((r["Name"], r["Driver"]) for r in rows) == [("db", "aws"), ("db2", "aws")]

    node.ok(
        "service", "create", "--name", "web", "--detach", "--secret", "db",
        TEST_IMAGE, "sh", "-c", "cat /run/secrets/db; echo; sleep 3600",
    )  # fmt: skip
    wait_until(lambda: container_output("web")[:1] == [value.decode()], 60, what="the value in the container")
    # The value lives in Secrets Manager: the manager's state dir (WAL, snapshots) has none of it
    # (the task's secrets tmpfs mounted below it is memory, another filesystem).
    on_disk = node.state_dir.stat().st_dev
    assert not [
        p for p in node.state_dir.rglob("*")
        if p.is_file() and p.stat().st_dev == on_disk and value in p.read_bytes()
    ]  # fmt: skip

    # Backend down: a new task needing a secret this node does not hold yet fails, and says why.
    moto.stop()
    node.ok(
        "service", "create", "--name", "web2", "--detach", "--secret", "db2", TEST_IMAGE, "sleep", "3600"
    )  # fmt: skip
    failed = wait_until(
        lambda: [t for t in node.tasks("web2") if t["Error"]], 60, what="web2's task to fail with an error"
    )
    assert f"cannot get secret db2: aws secrets backend at {moto.endpoint_url}: " in failed[0]["Error"], (
        failed
    )
    assert "cannot reach it" in failed[0]["Error"], failed

    # Nothing else breaks: the running service keeps running, a service without secrets starts,
    # and the API answers.
    node.ok("service", "create", "--name", "plain", "--detach", TEST_IMAGE, "sleep", "3600")
    wait_until(lambda: len(node.running("plain")) == 1, 60, what="the service without secrets to run")
    assert len(node.running("web")) == 1
    names = {line.split()[1] for line in node.ok("service", "ls").stdout.splitlines()[1:]}
    assert names == {"web", "web2", "plain"}
