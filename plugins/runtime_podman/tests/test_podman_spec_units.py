"""Unit tests for the podman runtime's mount and healthcheck rules (no engine needed)."""

from __future__ import annotations

from shoal.proto import objects_pb2 as pb
from shoal.testing.runtime import bind, make_task, tmpfs, volume


def test_mounts_split_into_oci_mounts_and_libpod_volumes() -> None:
    from shoal_runtime_podman.runtime import storage

    task = make_task(
        "img",
        node_id="n",
        mounts=[
            bind("/srv", "/data", readonly=True),
            volume("", "/anon"),
            volume("v", "/v", readonly=True),
            tmpfs("/t", size_bytes=4096),
        ],
    )
    oci, volumes = storage(task.spec.container)
    assert oci == [
        {"Type": "bind", "Source": "/srv", "Destination": "/data", "Options": ["ro"]},
        {"Type": "tmpfs", "Source": "tmpfs", "Destination": "/t", "Options": ["size=4096"]},
    ]
    assert volumes == [
        {"Name": "", "Dest": "/anon", "Options": []},
        {"Name": "v", "Dest": "/v", "Options": ["ro"]},
    ]


def test_healthconfig_fills_podman_cli_defaults_for_zero_fields() -> None:
    from shoal_runtime_podman.runtime import healthconfig

    assert healthconfig(make_task("img", node_id="n")) is None
    assert healthconfig(make_task("img", node_id="n", healthcheck=pb.HealthConfig(test=["NONE"]))) == {
        "Test": ["NONE"]
    }
    found = healthconfig(
        make_task("img", node_id="n", healthcheck=pb.HealthConfig(test=["CMD", "true"], interval=0.5))
    )
    assert found == {
        "Test": ["CMD", "true"],
        "Interval": 500_000_000,
        "Timeout": 30_000_000_000,
        "Retries": 3,
        "StartPeriod": 0,
    }


def test_the_podman_runtime_declares_a_wider_engine_gate_than_the_default() -> None:
    from shoal.agent.enginegate import DEFAULT_MAX_CONCURRENT_ENGINE_CALLS, engine_call_limit
    from shoal_runtime_podman.runtime import PodmanRuntime

    assert engine_call_limit(PodmanRuntime) == PodmanRuntime.engine_concurrency == 16
    assert PodmanRuntime.engine_concurrency > DEFAULT_MAX_CONCURRENT_ENGINE_CALLS
    assert engine_call_limit(PodmanRuntime, 8) == 8  # the operator's --max-concurrent-engine-calls
