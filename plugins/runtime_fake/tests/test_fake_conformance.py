"""The runtime conformance suite against the fake runtime (no engine: runs anywhere, fast).

The checks that need a real kernel behind the container (a filesystem the process writes and
reads, mounts, cgroups, a listening socket) are not collected here (set to None, each with why);
the docker and podman runtimes pass them on real engines. Nothing in this module skips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from shoal.testing.runtime import EngineContainer, EngineContainers, RuntimeConformance, VolumeRemover
from shoal_runtime_fake import FakeOptions, FakeRuntime

IMAGE = "shoal-busybox:1"


class TestFakeConformance(RuntimeConformance):
    has_find = True

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

    # ------------------------------------------------------------------ checks not collected here
    # Each needs a kernel behind the container; the docker and podman runtimes pass them on real
    # engines. Set to None so pytest does not collect them: nothing here can be skipped in CI.
    test_resource_limits_are_applied = None  # type: ignore[assignment]  # cgroup limits are read from /sys/fs/cgroup inside the container
    test_task_files_are_on_a_read_only_tmpfs_with_their_owner_and_mode = None  # type: ignore[assignment]  # secret files on a tmpfs are read with cat/stat inside the container
    test_bind_mounts_share_host_files_and_readonly_refuses_writes = None  # type: ignore[assignment]  # bind mounts share files between the host and the container
    test_host_mode_published_port_reaches_the_container = None  # type: ignore[assignment]  # a published port needs a process listening behind it
    test_named_volume_outlives_its_task = None  # type: ignore[assignment]  # a named volume is a filesystem shared by two containers
    test_anonymous_volume_and_tmpfs_are_mounted = None  # type: ignore[assignment]  # tmpfs and volume mounts are seen in the container's mount table
    test_start_returns_only_once_the_container_is_healthy = None  # type: ignore[assignment]  # the health check tests a file the container writes on a bind mount
    test_wait_reports_a_container_that_turns_unhealthy = None  # type: ignore[assignment]  # the health check tests a host file seen through a bind mount
