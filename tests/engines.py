"""Looking at containers through each engine's own API, independently of shoal's runtimes."""

from __future__ import annotations

import abc
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

NODE_LABEL = "io.shoal.node.id"
SERVICE_LABEL = "io.shoal.service.name"
TASK_LABEL = "io.shoal.task.id"
#: Parallel removals at teardown: enough for a test's containers, few enough for the engine.
REMOVAL_WORKERS = 8


@dataclass
class Container:
    id: str
    name: str
    running: bool
    labels: dict[str, str]


class Engine(abc.ABC):
    """A thin view of docker or podman for assertions: list by label, kill, remove."""

    name: str
    cli: list[str]

    def __init__(self) -> None:
        self.client: Any = None

    @abc.abstractmethod
    def containers(self, **labels: str) -> list[Container]:
        """Containers carrying all these labels, running or not."""

    def service_containers(self, node_id: str, service: str, running_only: bool = True) -> list[Container]:
        found = self.containers(**{NODE_LABEL: node_id, SERVICE_LABEL: service})
        return [c for c in found if c.running or not running_only]

    def kill(self, container_id: str) -> None:
        """Kill with the engine's own CLI, as an operator would."""
        subprocess.run([*self.cli, "kill", container_id], check=True, capture_output=True, timeout=60)

    def require_image(self, image: str) -> None:
        probe = subprocess.run([*self.cli, "image", "inspect", image], capture_output=True, text=True)
        if probe.returncode != 0:
            raise AssertionError(
                f"{self.name} has no image {image}: run scripts/build-test-images.sh {self.name} "
                f"({probe.stderr.strip()[:200]})"
            )

    def remove_node_containers(self, *node_ids: str) -> None:
        """Test cleanup through the engine's API (podman 4.3's CLI can deadlock on the
        container lock while its REST service works on the same container): every container of
        these nodes killed and removed at once, in parallel, so a teardown costs about one
        removal instead of one per container."""
        found = [c.id for node_id in node_ids for c in self.containers(**{NODE_LABEL: node_id})]
        if not found:
            return
        with ThreadPoolExecutor(max_workers=min(len(found), REMOVAL_WORKERS)) as pool:
            list(pool.map(self.force_remove, found))

    @abc.abstractmethod
    def force_remove(self, container_id: str) -> None:
        """Remove a container, running or not; a missing one is fine."""

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class DockerEngine(Engine):
    name = "docker"
    cli = ["docker"]

    def __init__(self) -> None:
        super().__init__()
        import docker

        self.client = docker.DockerClient(
            base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        )
        self.client.ping()

    def force_remove(self, container_id: str) -> None:
        import docker.errors

        try:
            self.client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass

    def containers(self, **labels: str) -> list[Container]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        # The low-level list answers in one call; the high-level one inspects each container
        # and races with containers being removed.
        return [
            Container(
                c["Id"], c["Names"][0].lstrip("/"), c["State"] == "running", dict(c.get("Labels") or {})
            )
            for c in self.client.api.containers(all=True, filters=filters)
        ]


class PodmanEngine(Engine):
    name = "podman"
    cli = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]

    def __init__(self) -> None:
        super().__init__()
        import podman

        self.client = podman.PodmanClient(
            base_url=os.environ.get("CONTAINER_HOST", "unix:///run/podman/podman.sock")
        )
        self.client.ping()

    def force_remove(self, container_id: str) -> None:
        # libpod's parameter is ``timeout`` (``t`` is the docker-compatible API's and libpod
        # ignores it): without it a forced removal first waits the 10 s stop timeout for a
        # PID 1 that ignores SIGTERM (``sleep``), i.e. every test container.
        self.client.api.delete(f"/containers/{container_id}", params={"force": True, "timeout": 0})

    def containers(self, **labels: str) -> list[Container]:
        # podman-py's label filters are unreliable (podman 4.3 answers with every container or
        # none); the REST endpoint takes the same JSON filters as docker's.
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        response = self.client.api.get("/containers/json", params={"all": True, "filters": filters})
        response.raise_for_status()
        return [
            Container(c["Id"], c["Names"][0], c["State"] == "running", dict(c.get("Labels") or {}))
            for c in response.json()
        ]


def engine_for(runtime: str) -> Engine:
    """The engine a runtime plugin drives; fails loudly if it is not running."""
    try:
        return DockerEngine() if runtime == "docker" else PodmanEngine()
    except Exception as exc:
        raise AssertionError(
            f"the {runtime} engine is not reachable ({type(exc).__name__}: {exc}); "
            "start it with scripts/start-engines.sh"
        ) from exc
