"""The runtime conformance suite against the fake runtime (no engine: runs anywhere, fast).

The checks that need a real kernel behind the container (a filesystem the process writes and
reads, mounts, cgroups, a listening socket) are skipped here, each saying why; the docker and
podman runtimes pass them on real engines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from shoal.testing.runtime import EngineContainer, EngineContainers, RuntimeConformance, VolumeRemover
from shoal_runtime_fake import FakeOptions, FakeRuntime

IMAGE = "shoal-busybox:1"


def _needs_a_real_engine(why: str) -> None:
    pytest.skip(f"needs a real engine: {why}")


class TestFakeConformance(RuntimeConformance):
    @pytest.fixture
    async def runtime(self) -> AsyncIterator[FakeRuntime]:
        provider = FakeRuntime(FakeOptions(images=(IMAGE,)))
        yield provider
        await provider.close()

    @pytest.fixture
    def image(self) -> str:
        return IMAGE

    @pytest.fixture
    def engine_containers(self, runtime: FakeRuntime) -> EngineContainers:
        async def containers(node_id: str) -> list[EngineContainer]:
            return [
                EngineContainer(id=c.id, name=c.name, labels=dict(c.labels), running=c.running)
                for c in runtime.engine.of_node(node_id)
            ]

        return containers

    @pytest.fixture
    async def unreachable_runtime(self) -> AsyncIterator[FakeRuntime]:
        provider = FakeRuntime(FakeOptions(reachable=False))
        yield provider
        await provider.close()

    @pytest.fixture
    def remove_volume(self) -> VolumeRemover:
        async def remove(name: str) -> None:
            return None

        return remove

    # ------------------------------------------------------------------ checks skipped here

    async def test_resource_limits_are_applied(self) -> None:  # type: ignore[override]
        """The container reads its cgroup files: limits are enforced by a kernel, not recorded."""
        _needs_a_real_engine("cgroup limits are read from /sys/fs/cgroup inside the container")

    async def test_task_files_are_on_a_read_only_tmpfs_with_their_owner_and_mode(self) -> None:  # type: ignore[override]
        """The container cats and stats its secret files and reads /proc/mounts: a real tmpfs."""
        _needs_a_real_engine("secret files on a tmpfs are read with cat/stat inside the container")

    async def test_bind_mounts_share_host_files_and_readonly_refuses_writes(self) -> None:  # type: ignore[override]
        """The container reads and writes host files through bind mounts."""
        _needs_a_real_engine("bind mounts share files between the host and the container")

    async def test_host_mode_published_port_reaches_the_container(self) -> None:  # type: ignore[override]
        """A TCP connection must reach an HTTP server in the container."""
        _needs_a_real_engine("a published port needs a process listening behind it")

    async def test_named_volume_outlives_its_task(self) -> None:  # type: ignore[override]
        """One container writes a file into a volume, another reads it."""
        _needs_a_real_engine("a named volume is a filesystem shared by two containers")

    async def test_anonymous_volume_and_tmpfs_are_mounted(self) -> None:  # type: ignore[override]
        """The container reads /proc/mounts and writes into its mounts."""
        _needs_a_real_engine("tmpfs and volume mounts are seen in the container's mount table")

    async def test_start_returns_only_once_the_container_is_healthy(self) -> None:  # type: ignore[override]
        """The health check tests a file the container creates on a bind mount."""
        _needs_a_real_engine("the health check tests a file the container writes on a bind mount")

    async def test_wait_reports_a_container_that_turns_unhealthy(self) -> None:  # type: ignore[override]
        """The health check tests a host file the test deletes, through a bind mount."""
        _needs_a_real_engine("the health check tests a host file seen through a bind mount")
