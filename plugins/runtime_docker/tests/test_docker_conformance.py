"""The runtime conformance suite against a real dockerd (scripts/start-engines.sh,
scripts/build-test-images.sh). A missing engine or image fails these tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import docker
import docker.errors
import pytest
from shoal.roles.runtime import LABEL_NODE_ID
from shoal.testing.runtime import EngineContainer, EngineContainers, RuntimeConformance, VolumeRemover
from shoal_runtime_docker import DockerRuntime

pytestmark = pytest.mark.engine

ENDPOINT = os.environ.get("SHOAL_TEST_DOCKER_HOST", "unix:///var/run/docker.sock")


class TestDockerConformance(RuntimeConformance):
    has_find = True

    @pytest.fixture
    async def runtime(self) -> AsyncIterator[DockerRuntime]:
        provider = DockerRuntime(ENDPOINT)
        yield provider
        await provider.close()

    @pytest.fixture
    def image(self) -> str:
        return "shoal-busybox:1"

    @pytest.fixture
    def engine_containers(self) -> EngineContainers:
        client = docker.APIClient(base_url=ENDPOINT, version="1.41")

        async def containers(node_id: str) -> list[EngineContainer]:
            found = client.containers(all=True, filters={"label": f"{LABEL_NODE_ID}={node_id}"})
            return [
                EngineContainer(
                    id=entry["Id"],
                    name=entry["Names"][0],
                    labels=entry.get("Labels") or {},
                    running=entry["State"] == "running",
                )
                for entry in found
            ]

        return containers

    @pytest.fixture
    async def unreachable_runtime(self, tmp_path: object) -> AsyncIterator[DockerRuntime]:
        provider = DockerRuntime(f"unix://{tmp_path}/no-engine.sock")
        yield provider
        await provider.close()

    @pytest.fixture
    def remove_volume(self) -> VolumeRemover:
        client = docker.APIClient(base_url=ENDPOINT, version="1.41")

        async def remove(name: str) -> None:
            try:
                client.remove_volume(name, force=True)
            except docker.errors.NotFound:
                pass

        return remove
