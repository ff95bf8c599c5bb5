"""Looking at containers through each engine's own API, independently of shoal's runtimes."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

NODE_LABEL = "io.shoal.node.id"
SERVICE_LABEL = "io.shoal.service.name"
TASK_LABEL = "io.shoal.task.id"


@dataclass
class Container:
    id: str
    name: str
    running: bool
    labels: dict[str, str]


class Engine:
    """A thin view of docker or podman for assertions: list by label, kill, remove."""

    name: str
    cli: list[str]

    def __init__(self) -> None:
        self.client: Any = None

    def containers(self, **labels: str) -> list[Container]:
        raise NotImplementedError

    def service_containers(self, node_id: str, service: str, running_only: bool = True) -> list[Container]:
        found = self.containers(**{NODE_LABEL: node_id, SERVICE_LABEL: service})
        return [c for c in found if c.running or not running_only]

    def kill(self, container_id: str) -> None:
        subprocess.run([*self.cli, "kill", container_id], check=True, capture_output=True)

    def require_image(self, image: str) -> None:
        probe = subprocess.run([*self.cli, "image", "inspect", image], capture_output=True, text=True)
        if probe.returncode != 0:
            raise AssertionError(
                f"{self.name} has no image {image}: run scripts/build-test-images.sh {self.name} "
                f"({probe.stderr.strip()[:200]})"
            )

    def remove_node_containers(self, node_id: str) -> None:
        for container in self.containers(**{NODE_LABEL: node_id}):
            subprocess.run([*self.cli, "rm", "-f", container.id], capture_output=True)

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
