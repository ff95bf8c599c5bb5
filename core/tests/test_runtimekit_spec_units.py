"""Unit tests for the docker runtime's mount and healthcheck rules (no engine needed)."""

from __future__ import annotations

import pytest
from shoal.proto import objects_pb2 as pb
from shoal.roles.runtime import RuntimeError_
from shoal.runtimekit import task as _task
from shoal.testing.runtime import bind, make_task, shell_health, tmpfs, volume


def test_valid_mounts_pass_the_check() -> None:
    task = make_task(
        "img",
        node_id="n",
        mounts=[
            bind("/srv", "/data", readonly=True),
            volume("", "/anon"),
            volume("v", "/v"),
            tmpfs("/t", size_bytes=1),
        ],
    )
    _task.check(task)


@pytest.mark.parametrize(
    ("mount", "complaint"),
    [
        (bind("/srv", "data"), "target must be an absolute path"),
        (bind("", "/data"), "source must be an absolute host path"),
        (bind("relative/dir", "/data"), "source must be an absolute host path"),
        (pb.Mount(type=pb.Mount.TMPFS, source="x", target="/t"), "tmpfs mount takes no source"),
        (pb.Mount(type=pb.Mount.TMPFS, target="/t", tmpfs_size_bytes=-1), "must not be negative"),
        (pb.Mount(type=pb.Mount.VOLUME, source="v", target="/t", tmpfs_size_bytes=5), "only a tmpfs mount"),
    ],
)
def test_bad_mounts_are_refused_naming_the_problem(mount: pb.Mount, complaint: str) -> None:
    with pytest.raises(RuntimeError_, match=complaint) as caught:
        _task.check(make_task("img", node_id="n", mounts=[mount]))
    assert not caught.value.temporary


def test_no_or_empty_healthcheck_keeps_the_images() -> None:
    assert _task.requested_health(make_task("img", node_id="n")) is None
    assert _task.requested_health(make_task("img", node_id="n", healthcheck=pb.HealthConfig())) is None


def test_none_disables_and_commands_carry_their_timings_in_nanoseconds() -> None:
    none = make_task("img", node_id="n", healthcheck=pb.HealthConfig(test=["NONE"]))
    assert _task.requested_health(none) == {"Test": ["NONE"]}
    health = pb.HealthConfig(test=["CMD", "true"], interval=0.25, timeout=2, retries=4, start_period=1.5)
    assert _task.requested_health(make_task("img", node_id="n", healthcheck=health)) == {
        "Test": ["CMD", "true"],
        "Interval": 250_000_000,
        "Timeout": 2_000_000_000,
        "Retries": 4,
        "StartPeriod": 1_500_000_000,
    }


@pytest.mark.parametrize(
    ("health", "complaint"),
    [
        (pb.HealthConfig(test=["true"]), "test must be"),
        (pb.HealthConfig(test=["CMD"]), "test must be"),
        (pb.HealthConfig(test=["CMD-SHELL", "a", "b"]), "exactly one command string"),
        (pb.HealthConfig(test=["CMD", "true"], interval=-1), "interval must be"),
        (pb.HealthConfig(test=["CMD", "true"], timeout=float("nan")), "timeout must be"),
        (pb.HealthConfig(test=["CMD", "true"], start_period=float("inf")), "start_period must be"),
    ],
)
def test_bad_healthchecks_are_refused_naming_the_problem(health: pb.HealthConfig, complaint: str) -> None:
    with pytest.raises(RuntimeError_, match=complaint):
        _task.check(make_task("img", node_id="n", healthcheck=health))


def test_effective_health_fills_engine_defaults() -> None:
    assert _task.effective_health(None) is None
    assert _task.effective_health({"Test": []}) is None
    assert _task.effective_health({"Test": ["NONE"]}) is None
    assert _task.effective_health({"Test": ["CMD-SHELL", "true"]}) == _task.Health(30.0, 30.0, 3, 0.0)
    config = {"Test": ["CMD", "x"], "Interval": 5 * 10**8, "Retries": 2}
    assert _task.effective_health(config) == _task.Health(0.5, 30.0, 2, 0.0)
    assert shell_health("true").test == ["CMD-SHELL", "true"]


def test_exit_before_healthy_message_keeps_the_engines_words() -> None:
    assert _task.exited_before_healthy(3, "") == "container exited with code 3 before it was healthy"
    assert _task.exited_before_healthy(1, "oom").endswith("healthy: oom")
