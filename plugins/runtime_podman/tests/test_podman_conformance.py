"""The runtime conformance suite against a real podman service (scripts/start-engines.sh,
scripts/build-test-images.sh). A missing engine or image fails these tests."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import podman.api
import pytest
from shoal.roles.runtime import LABEL_NODE_ID
from shoal.testing.runtime import EngineContainer, EngineContainers, RuntimeConformance, VolumeRemover
from shoal_runtime_podman import PodmanRuntime

pytestmark = pytest.mark.engine

ENDPOINT = os.environ.get("SHOAL_TEST_PODMAN_HOST", "unix:///run/podman/podman.sock")


class TestPodmanConformance(RuntimeConformance):
    has_find = True

    @pytest.fixture
    async def runtime(self) -> AsyncIterator[PodmanRuntime]:
        provider = PodmanRuntime(ENDPOINT)
        yield provider
        await provider.close()

    @pytest.fixture
    def image(self) -> str:
        return "shoal-busybox:1"  # stored by podman as localhost/shoal-busybox:1

    @pytest.fixture
    def engine_containers(self) -> EngineContainers:
        client = podman.api.APIClient(base_url=ENDPOINT, version="4.0.0")

        async def containers(node_id: str) -> list[EngineContainer]:
            filters = json.dumps({"label": [f"{LABEL_NODE_ID}={node_id}"]})
            response = client.get("/containers/json", params={"all": True, "filters": filters})
            assert response.status_code == 200, response.text
            return [
                EngineContainer(
                    id=entry["Id"],
                    name=entry["Names"][0],
                    labels=entry.get("Labels") or {},
                    running=entry["State"] == "running",
                )
                for entry in response.json() or []
            ]

        return containers

    @pytest.fixture
    async def unreachable_runtime(self, tmp_path: Path) -> AsyncIterator[PodmanRuntime]:
        provider = PodmanRuntime(f"unix://{tmp_path}/no-engine.sock")
        yield provider
        await provider.close()

    @pytest.fixture
    def remove_volume(self) -> VolumeRemover:
        client = podman.api.APIClient(base_url=ENDPOINT, version="4.0.0")

        async def remove(name: str) -> None:
            response = client.delete(f"/volumes/{name}", params={"force": True})
            assert response.status_code in (204, 404), response.text

        return remove
