"""Secrets and configs end to end: real daemons, real engines, real tmpfs mounts.

A secret reaches a worker only with a task of that worker that uses it, lives in the agent's
memory and on a per-task tmpfs (never on a disk: not in any node's state dir, not in the
engine's files for the container, not in the managers' WAL), and is forgotten when no task
of that worker needs it any more.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets as random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from engines import engine_for
from harness import TEST_IMAGE, ShoalNode, start_cluster, wait_until

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]
#: What the test container shows of its secret (a digest: its log is on the engine's disk) and
#: config, then it sleeps.
SHOW = (
    "sha256sum /run/secrets/db; stat -c 'mode=%a owner=%u:%g' /run/secrets/db; "
    "grep ' /run/secrets ' /proc/mounts; echo \"$(cat /etc/app.conf)\"; sleep 3600"
)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """Every regular file under ``root`` on ``root``'s own filesystem that contains ``needle``
    (a task's secrets tmpfs mounted below is another filesystem: memory, not disk)."""
    found = []
    device = root.stat().st_dev
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if (Path(directory) / d).lstat().st_dev == device]
        for name in files:
            path = Path(directory) / name
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of process ``pid`` contains ``needle``."""
    chunk = 8 << 20
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            position, tail = start, b""
            while position < end:
                try:
                    mem.seek(position)
                    data = mem.read(min(chunk, end - position))
                except OSError:
                    break
                if not data:
                    break
                if needle in tail + data:
                    return True
                tail = data[-len(needle) :]
                position += len(data)
    return False


def daemon_pid(node: ShoalNode) -> int:
    assert node.proc is not None
    return node.proc.pid


def secrets_mounts(base: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(base) in line]


@pytest.fixture
def cluster(node_factory: Factory) -> Iterator[tuple[ShoalNode, ShoalNode, ShoalNode]]:
    manager, workers = start_cluster(node_factory, "w1", "w2")
    manager.ok("node", "update", "--availability", "drain", "mgr")
    yield manager, workers[0], workers[1]
    # A failed test may leave a task's secrets tmpfs mounted: unmount it (memory, never disk).
    for node in (manager, *workers):
        for line in secrets_mounts(node.state_dir):
            subprocess.run(["umount", "-l", line.split()[1]], check=False)


def test_secret_reaches_only_the_node_of_its_task_on_a_tmpfs(
    cluster: tuple[ShoalNode, ShoalNode, ShoalNode], tmp_path: Path
) -> None:
    manager, w1, w2 = cluster
    value = f"s3cr3t-{random.token_hex(16)}".encode()
    (tmp_path / "value").write_bytes(value)
    (tmp_path / "conf").write_text("config-data-42")
    secret_id = manager.ok("secret", "create", "--label", "team=db", "db-password", str(tmp_path / "value"))
    manager.ok("config", "create", "app-conf", str(tmp_path / "conf"))

    # The API never shows the value; ls and inspect show what docker shows.
    rows = manager.ok("secret", "ls", "--format", "json").json_lines()
    assert [(r["ID"], r["Name"], r["Driver"]) for r in rows] == [
        (secret_id.stdout.strip(), "db-password", "internal")
    ]
    assert manager.ok("secret", "ls", "-q", "--filter", "label=team=db").stdout.split() == [rows[0]["ID"]]
    assert manager.ok("secret", "ls", "-q", "--filter", "name=nope").stdout == ""
    inspected = manager.ok("secret", "inspect", "db-password").stdout
    assert value.decode() not in inspected and '"data"' not in inspected

    # Refusals: one line, nothing stored.
    (tmp_path / "big").write_bytes(b"x" * (500 * 1024))
    big = manager.cli("secret", "create", "big", str(tmp_path / "big"))
    assert big.returncode == 2 and "500 KiB" in one_line_error(big.stderr)
    unknown = manager.cli("service", "create", "--name", "bad", "--detach", "--secret", "no-such", TEST_IMAGE)
    assert unknown.returncode == 2 and "secret not found: no-such" in one_line_error(unknown.stderr)
    assert manager.ok("service", "ls", "-q").stdout == ""
    assert [r["Name"] for r in manager.ok("secret", "ls", "--format", "json").json_lines()] == ["db-password"]

    manager.ok(
        "service", "create", "--name", "web", "--detach", "--constraint", "node.hostname==w1",
        "--stop-grace-period", "0s",  # its sleep ignores SIGTERM: scale-down and rm wait no 10 s
        "--secret", "source=db-password,target=db,uid=7,gid=8,mode=0400",
        "--config", "source=app-conf,target=/etc/app.conf",
        TEST_IMAGE, "sh", "-c", SHOW,
    )  # fmt: skip
    api = docker.APIClient()

    def container_output() -> list[str]:
        found = api.containers(filters={"label": "io.shoal.service.name=web"})
        return api.logs(found[0]["Id"]).decode().splitlines() if found else []

    shown = wait_until(lambda: (out := container_output()) and len(out) >= 4 and out, 60, what="the output")
    assert shown[0].split()[0] == hashlib.sha256(value).hexdigest()
    assert shown[1] == "mode=400 owner=7:8"
    mount = shown[2].split()
    assert mount[1:3] == ["/run/secrets", "tmpfs"] and "ro" in mount[3].split(","), shown[2]
    assert shown[3] == "config-data-42"
    refused = manager.cli("secret", "rm", "db-password")
    assert refused.returncode == 1
    assert "secret 'db-password' is in use by the following service: web" in one_line_error(refused.stderr)

    # No trace on any disk: every node's state dir (WAL and snapshots included), the engine's
    # data dir (the container's config, log and writable layer among the rest). Worker 2
    # never had it, not even in memory; worker 1 holds it (the memory scan finds what is there).
    for node in (manager, w1, w2):
        assert files_holding(node.state_dir, value) == [], node.name
    engine_root = Path(api.info()["DockerRootDir"])
    assert files_holding(engine_root, value) == [], engine_root
    assert not memory_holds(daemon_pid(w2), value)
    assert memory_holds(daemon_pid(w1), value)

    # Scale onto worker 2: it gets the secret with its task; scale back: the node that lost
    # its task forgets it and its tmpfs goes.
    manager.ok(
        "service", "update", "--detach", "--constraint-rm", "node.hostname==w1",
        "--constraint-add", "node.role==worker", "--replicas-max-per-node", "1", "web",
    )  # fmt: skip
    manager.ok("service", "scale", "web=2", "--detach")
    wait_until(
        lambda: sorted(t["Node"] for t in manager.running("web")) == ["w1", "w2"],
        60,
        what="one task per worker",
    )
    wait_until(lambda: memory_holds(daemon_pid(w2), value), 30, what="worker 2 to hold the secret")
    manager.ok("service", "scale", "web=1", "--detach")
    running = wait_until(lambda: (r := manager.running("web")) and len(r) == 1 and r, 60, what="one task")
    gone = w1 if running[0]["Node"] == "w2" else w2
    wait_until(lambda: "forgot secret" in gone.log_text(), 30, what=f"{gone.name} to forget the secret")
    wait_until(lambda: not secrets_mounts(gone.state_dir), 30, what=f"{gone.name}'s secrets tmpfs to go")

    # Removing the service releases every tmpfs, and then the secret can go.
    manager.ok("service", "rm", "web")
    for node in (w1, w2):
        wait_until(lambda n=node: not secrets_mounts(n.state_dir), 60, what=f"{node.name}'s tmpfs to go")
    assert manager.ok("secret", "rm", "db-password").stdout.split() == ["db-password"]
    assert manager.ok("config", "rm", "app-conf").stdout.split() == ["app-conf"]
    assert re.fullmatch(r"\s*", manager.ok("secret", "ls", "-q").stdout)


def test_secret_and_config_on_podman(node_factory: Factory, tmp_path: Path) -> None:
    """The same mount on the other runtime, through a whole daemon (one node)."""
    node = node_factory(name="p1", runtime="podman").start()
    node.init()
    value = f"podman-{random.token_hex(16)}".encode()
    (tmp_path / "value").write_bytes(value)
    (tmp_path / "conf").write_text("config-data-42")
    node.ok("secret", "create", "db-password", str(tmp_path / "value"))
    node.ok("config", "create", "app-conf", str(tmp_path / "conf"))
    try:
        node.ok(
            "service", "create", "--name", "web", "--detach", "--stop-grace-period", "0s",
            "--secret", "source=db-password,target=db,uid=7,gid=8,mode=0400",
            "--config", "source=app-conf,target=/etc/app.conf",
            TEST_IMAGE, "sh", "-c", SHOW,
        )  # fmt: skip
        shown = wait_until(
            lambda: (
                (out := node.ok("service", "logs", "--raw", "web").stdout.splitlines())
                and len(out) >= 4
                and out
            ),
            60,
            what="the container to show its secret",
        )
        assert shown[0].split()[0] == hashlib.sha256(value).hexdigest()
        assert shown[1] == "mode=400 owner=7:8"
        mount = shown[2].split()
        assert mount[1:3] == ["/run/secrets", "tmpfs"] and "ro" in mount[3].split(","), shown[2]
        assert shown[3] == "config-data-42"
        assert files_holding(node.state_dir, value) == []
        podman = engine_for("podman")
        try:
            graph_root = Path(podman.client.api.get("/info").json()["store"]["graphRoot"])
        finally:
            podman.close()
        assert files_holding(graph_root, value) == [], graph_root
        node.ok("service", "rm", "web")
        wait_until(lambda: not secrets_mounts(node.state_dir), 60, what="the task's tmpfs to go")
    finally:
        for line in secrets_mounts(node.state_dir):
            subprocess.run(["umount", "-l", line.split()[1]], check=False)
