"""Issue 13, defect 5: what a node writes under its state dir is for its own user only.

A worker's task DB holds every assigned task's spec, env in clear; a manager's state dir holds
the store (root CA key, secrets). Every file there is 0600 (or stricter) and every directory
0700, on a live manager and a live worker after a service with env ran on the worker; the
local API socket stays 0600.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import TEST_IMAGE, ShoalNode, wait_until
from shoal import identity
from shoal.agent.taskdb import TaskDB
from shoal.daemon.state import NodeState, save_state
from shoal.proto import objects_pb2 as pb

pytestmark = [pytest.mark.cluster]

SECRET = "SEARCH_DB_PASSWORD=hunter2-not-for-other-users"


def too_open(state_dir: Path) -> list[str]:
    """Every entry under ``state_dir`` (itself included) that another local user could use."""
    found = []
    for entry in [state_dir, *state_dir.rglob("*")]:
        info = entry.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            if mode != 0o700:
                found.append(f"{entry} is a directory with mode {mode:04o}, expected 0700")
        elif stat.S_ISREG(info.st_mode):
            if mode & ~0o600:
                found.append(f"{entry} is a file with mode {mode:04o}, expected 0600 or stricter")
        else:
            found.append(f"{entry} is neither a file nor a directory ({stat.filemode(info.st_mode)})")
    return found


def test_every_state_file_of_a_manager_and_a_worker_is_private(
    node_factory: Callable[..., ShoalNode],
) -> None:
    manager = node_factory("m1").start()
    manager.init()
    worker = node_factory("w1").start()
    worker.join(manager)
    manager.ok(
        "service",
        "create",
        "-d",
        "--name",
        "envsvc",
        "--env",
        SECRET,
        "--constraint",
        "node.role==worker",
        TEST_IMAGE,
        "sleep",
        "3600",
    )
    wait_until(lambda: len(manager.running("envsvc")) == 1, 90, what="the service running on the worker")

    task_db = worker.state_dir / "worker" / "tasks.db"
    # What this test guards: the env is on the worker's disk, in the task DB and its WAL.
    on_disk = b"".join(p.read_bytes() for p in task_db.parent.iterdir() if p.is_file())
    assert SECRET.encode() in on_disk
    assert task_db.with_name("tasks.db-wal").exists()

    for node in (manager, worker):
        problems = too_open(node.state_dir)
        assert not problems, f"{node.name}: " + "; ".join(problems)
        assert stat.S_IMODE(node.socket.stat().st_mode) == 0o600, "the local API socket is root-only"


def test_a_state_dir_left_open_by_an_older_version_is_tightened_at_start(
    node_factory: Callable[..., ShoalNode],
) -> None:
    node = node_factory("m1").start()
    node.init()
    node.stop()
    loose = [node.state_dir, *node.state_dir.rglob("*")]
    for entry in loose:
        entry.chmod(0o755 if entry.is_dir() else 0o644)
    node.start()
    assert not too_open(node.state_dir), too_open(node.state_dir)
    assert "removed group and other permissions" in node.log_text()


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a process that forgot to set one (the daemon sets 077 at start)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_sensitive_files_are_private_even_under_an_open_umask(tmp_path: Path, open_umask: None) -> None:
    """The second layer: files that matter are created 0600 explicitly, whatever the umask."""
    state_dir = tmp_path / "state"
    db = TaskDB(state_dir / "worker" / "tasks.db")
    task = pb.Task(id="t1")
    task.spec.container.env.append(SECRET)
    db.put_task(task)
    save_state(state_dir, NodeState("n", "c", "worker", "127.0.0.1:1", "127.0.0.1:1", ["127.0.0.1:2"]))
    identity.write_credentials(
        state_dir / "certificates",
        identity.NodeCredentials(key_pem=b"key", cert_pem=b"cert", root_pem=b"root"),
    )
    assert (state_dir / "worker" / "tasks.db-wal").exists()
    problems = too_open(state_dir)
    db.close()
    assert not problems, "; ".join(problems)
