"""``--with-registry-auth`` against a real private registry (htpasswd auth, TLS from a test CA).

The worker never logged in (its daemon's DOCKER_CONFIG is empty): it pulls the private image
only with the credentials the client sent with the service, which the managers keep sealed
and send with the task; nothing of them reaches a disk or ``inspect``.
"""

from __future__ import annotations

import base64
import secrets as random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from harness import SHOAL, TEST_IMAGE, ShoalNode, start_cluster, wait_until
from private_registry import PrivateRegistry
from test_secrets import daemon_pid, files_holding, memory_holds, one_line_error

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]
#: What docker says when a registry wants credentials and got none.
AUTH_REFUSED = ("no basic auth credentials", "unauthorized", "authentication required")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[PrivateRegistry]:
    """A registry on the docker bridge's gateway address (the engines treat 127.0.0.0/8 as an
    insecure registry and then hide the registry's refusal behind a plain-HTTP retry)."""
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout, f"no docker0 bridge: {shown.stderr}"
    gateway = shown.stdout.split()[3].split("/")[0]
    running = PrivateRegistry(tmp_path / "registry", "shoal-user", f"pw-{random.token_hex(16)}", host=gateway)
    running.start()
    yield running
    running.stop()


def push(registry: PrivateRegistry, repository: str) -> str:
    """Push the test image to ``registry`` as ``repository:1`` and drop the local tag, so that
    running it needs a pull. Returns the image reference."""
    api = docker.APIClient()
    image = f"{registry.address}/{repository}"
    api.tag(TEST_IMAGE, image, "1")
    auth = {"username": registry.username, "password": registry.password}
    events = list(api.push(image, "1", stream=True, decode=True, auth_config=auth))
    assert not [e for e in events if "error" in e], events
    api.remove_image(f"{image}:1")
    return f"{image}:1"


def test_private_image_runs_on_a_worker_that_never_logged_in(
    node_factory: Factory, registry: PrivateRegistry, tmp_path: Path
) -> None:
    empty = tmp_path / "no-login"
    empty.mkdir()

    def factory(**kwargs: object) -> ShoalNode:
        return node_factory(env={"DOCKER_CONFIG": str(empty)}, **kwargs)

    manager, (worker, idle) = start_cluster(factory, "w1", "w2")
    manager.ok("node", "update", "--availability", "drain", "mgr")
    image = push(registry, "private/app")
    logged_in = {**manager.env(), "DOCKER_CONFIG": str(registry.docker_config(tmp_path / "client"))}

    def client(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SHOAL, *args], capture_output=True, text=True, env=logged_in, timeout=120)

    try:
        # Without the flag the worker pulls with nothing: the registry's refusal in service ps.
        created = client(
            "service", "create", "--name", "anon", "--detach", "--constraint", "node.hostname==w1", image
        )
        assert created.returncode == 0, created.stderr

        def refused() -> str:
            errors = [t["Error"] for t in manager.tasks("anon") if t["Error"]]
            return next((e for e in errors if any(word in e for word in AUTH_REFUSED)), "")

        wait_until(refused, 90, what="the registry's refusal in service ps")
        assert not manager.running("anon")
        manager.ok("service", "rm", "anon")

        # No credentials for that registry on the client: one line, exit 2, nothing created.
        other = subprocess.run(
            [*SHOAL, "service", "create", "--name", "x", "--with-registry-auth", "--detach", image],
            capture_output=True,
            text=True,
            env={**manager.env(), "DOCKER_CONFIG": str(empty)},
            timeout=60,
        )
        assert other.returncode == 2, other
        assert f"no credentials for {registry.address}" in one_line_error(other.stderr)
        assert manager.ok("service", "ls", "-q").stdout == ""

        # With the flag the task runs on the worker.
        created = client(
            "service", "create", "--name", "private", "--detach", "--with-registry-auth",
            "--constraint", "node.hostname==w1", image,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        wait_until(
            lambda: [t["Node"] for t in manager.running("private")] == ["w1"], 90, what="the task running"
        )

        # inspect says the credentials are set, never what they are (not even sealed).
        inspected = manager.ok("service", "inspect", "private").stdout
        assert '"WithRegistryAuth": true' in inspected and "registry_auth" not in inspected
        auth_line = base64.b64encode(f"{registry.username}:{registry.password}".encode())
        for needle in (registry.password.encode(), auth_line):
            assert needle.decode() not in inspected
            for node in (manager, worker, idle):
                assert files_holding(node.state_dir, needle) == [], node.name
        # update --with-registry-auth reads the credentials for the service's image again.
        updated = client("service", "update", "--detach", "--with-registry-auth", "private")
        assert updated.returncode == 0, updated.stderr
        assert '"WithRegistryAuth": true' in manager.ok("service", "inspect", "private").stdout
        # Sent to the node of the task only: the other worker never had them, even in memory.
        assert memory_holds(daemon_pid(worker), registry.password.encode())
        assert not memory_holds(daemon_pid(idle), registry.password.encode())
    finally:
        for name in ("anon", "private"):
            manager.cli("service", "rm", name)
        try:
            docker.APIClient().remove_image(image, force=True)
        except docker.errors.NotFound:
            pass


def test_podman_pulls_a_private_image_with_the_credentials_sent(
    node_factory: Factory, registry: PrivateRegistry, tmp_path: Path
) -> None:
    """The other runtime, one node: without the flag the registry refuses, with it the task runs."""
    node = node_factory(name="p1", runtime="podman").start()
    node.init()
    image = push(registry, "private/podman")
    logged_in = {**node.env(), "DOCKER_CONFIG": str(registry.docker_config(tmp_path / "client"))}

    def create(name: str, *flags: str) -> None:
        created = subprocess.run(
            [*SHOAL, "service", "create", "--name", name, "--detach", *flags, image],
            capture_output=True,
            text=True,
            env=logged_in,
            timeout=120,
        )
        assert created.returncode == 0, created.stderr

    try:
        create("anon")
        wait_until(
            lambda: any(word in t["Error"] for t in node.tasks("anon") for word in AUTH_REFUSED),
            90,
            what="the registry's refusal in service ps",
        )
        node.ok("service", "rm", "anon")
        create("private", "--with-registry-auth")
        wait_until(lambda: len(node.running("private")) == 1, 90, what="the task running on podman")
    finally:
        for name in ("anon", "private"):
            node.cli("service", "rm", name)
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True, check=False)
