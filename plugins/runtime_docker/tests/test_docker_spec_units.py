"""Unit tests for the docker runtime's mount and healthcheck rules (no engine needed)."""

from __future__ import annotations

from shoal.runtimekit import task as _task
from shoal.testing.runtime import bind, make_task, tmpfs, volume


def test_mounts_take_the_engine_api_shape() -> None:
    from shoal_runtime_docker.runtime import health_poll_seconds, mounts

    task = make_task(
        "img",
        node_id="n",
        mounts=[bind("/srv", "/data", readonly=True), volume("", "/anon"), tmpfs("/t", size_bytes=4096)],
    )
    assert mounts(task.spec.container) == [
        {"Type": "bind", "Target": "/data", "Source": "/srv", "ReadOnly": True},
        {"Type": "volume", "Target": "/anon", "Source": "", "ReadOnly": False},
        {
            "Type": "tmpfs",
            "Target": "/t",
            "Source": "",
            "ReadOnly": False,
            "TmpfsOptions": {"SizeBytes": 4096},
        },
    ]
    assert health_poll_seconds(_task.Health(0.25, 1, 1, 0)) == 0.125
    assert health_poll_seconds(_task.Health(0.01, 1, 1, 0)) == 0.1
    assert health_poll_seconds(_task.Health(30, 1, 1, 0)) == 1.0


def test_the_docker_runtime_declares_its_engine_gate() -> None:
    from shoal.agent.enginegate import engine_call_limit
    from shoal_runtime_docker.runtime import DockerRuntime

    assert engine_call_limit(DockerRuntime) == DockerRuntime.engine_concurrency == 8
    assert engine_call_limit(DockerRuntime, 3) == 3  # the operator's --max-concurrent-engine-calls
