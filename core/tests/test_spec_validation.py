"""The validators behind every service, scale and swarm-update option (issue 13, defect 7).

Each bad value is refused with one ``SpecError`` line naming the flag; the kinds of values are
those docker refuses: numbers out of their field's range, not-a-number text, an image that is
not a reference, an unknown signal, a hostname the kernel would refuse, an empty image.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from shoal import defaults, specs
from shoal.imageref import reference_problem
from shoal.manager.controlapi import ControlAPI, ControlError, control_params
from shoal.proto import objects_pb2 as pb
from shoal.roles.transport import StatusCode
from shoal.store.memory import ObjectStore
from shoal.testing.objectstore import InstantLog

HUGE = "99999999999999999999999"


def create(**params: Any) -> pb.ServiceSpec:
    return specs.service_spec({"name": "web", "image": "searchsvc:v1.0", **params})


BAD_CREATES: list[tuple[dict[str, Any], str]] = [
    ({"replicas": HUGE}, "--replicas"),
    ({"replicas": "9" * 5000}, "at most"),
    ({"replicas": str(specs.MAX_REPLICAS + 1)}, "at most"),
    ({"replicas": 2.5}, "whole number"),
    ({"replicas": True}, "whole number"),
    ({"replicas": "1_000"}, "whole number"),
    ({"replicas": ""}, "--replicas"),
    ({"replicas_max_per_node": HUGE + "0000"}, "--replicas-max-per-node"),
    ({"restart_max_attempts": HUGE}, "--restart-max-attempts"),
    ({"health_retries": "3000000000"}, "--health-retries"),
    ({"update_parallelism": HUGE}, "--update-parallelism"),
    ({"rollback_parallelism": "-1"}, "--rollback-parallelism"),
    ({"reserve_cpu": "nan"}, "--reserve-cpu"),
    ({"limit_cpu": "inf"}, "--limit-cpu"),
    ({"limit_cpu": "1e300"}, "--limit-cpu"),
    ({"limit_memory": "9" * 400 + "g"}, "--limit-memory"),
    ({"reserve_memory": "99999999999t"}, "--reserve-memory"),
    ({"restart_delay": "9" * 400 + "h"}, "--restart-delay"),
    ({"stop_grace_period": "300000000h"}, "--stop-grace-period"),
    ({"health_interval": ""}, "--health-interval"),
    ({"update_max_failure_ratio": "nan"}, "--update-max-failure-ratio"),
    ({"update_order": ""}, "--update-order"),
    ({"restart_condition": ""}, "--restart-condition"),
    ({"pull": ""}, "--pull"),
    ({"mode": ""}, "--mode"),
    ({"image": "SEARCHSVC:V1.0"}, "must be lowercase"),
    ({"image": "searchsvc:"}, "not a valid tag"),
    ({"image": "a@sha256:xyz"}, "not a valid digest"),
    ({"stop_signal": "SIGNOPE"}, "--stop-signal"),
    ({"stop_signal": "65"}, "--stop-signal"),
    ({"stop_signal": "0"}, "--stop-signal"),
    ({"hostname": "h" * 300}, "at most 64 characters"),
    ({"hostname": "-bad-"}, "--hostname"),
    ({"hostname": "a..b"}, "--hostname"),
    ({"hostname": "under_score"}, "--hostname"),
    ({"workdir": "relative/dir"}, "absolute path"),
    ({"env": "A=1"}, "list of strings"),
    ({"constraints": [1]}, "list of strings"),
    ({"mounts": ["type=volume,source=bad/name,target=/data"]}, "volume name"),
    ({"mounts": ["type=tmpfs,target=/"]}, "cannot be"),
]


@pytest.mark.parametrize(("params", "flag"), BAD_CREATES, ids=[str(p)[:40] for p, _ in BAD_CREATES])
def test_bad_values_are_refused_with_a_line_naming_them(params: dict[str, Any], flag: str) -> None:
    with pytest.raises(specs.SpecError, match=flag.replace("-", r"\-")) as failure:
        create(**params)
    assert "\n" not in str(failure.value)


def test_good_values_are_kept() -> None:
    spec = create(
        replicas=str(specs.MAX_REPLICAS),
        stop_signal="sigusr1",
        hostname="web-1.example",
        workdir="/srv",
        limit_cpu="1.5",
        limit_memory="1g",
        restart_delay="1m30s",
        health_retries=3,
    )
    assert spec.replicated.replicas == specs.MAX_REPLICAS
    assert spec.task.container.stop_signal == "sigusr1"
    assert spec.task.container.hostname == "web-1.example"
    assert spec.task.resources.limits.nano_cpus == 1_500_000_000
    for signal in ("SIGTERM", "TERM", "15", "RTMAX", "1", "64"):
        assert specs.parse_stop_signal(signal) == signal


def test_update_with_an_empty_value() -> None:
    current = create(hostname="web", workdir="/srv", stop_signal="SIGINT", entrypoint="/bin/sh -c")
    with pytest.raises(specs.SpecError, match="--image"):
        specs.updated_spec(current, {"image": ""})
    with pytest.raises(specs.SpecError, match="--replicas"):
        specs.updated_spec(current, {"replicas": ""})
    with pytest.raises(specs.SpecError, match="--restart-delay"):
        specs.updated_spec(current, {"restart_delay": ""})
    cleared = specs.updated_spec(
        current, {"hostname": "", "workdir": "", "stop_signal": "", "entrypoint": ""}
    )
    assert (cleared.task.container.hostname, cleared.task.container.dir) == ("", "")
    assert cleared.task.container.stop_signal == "" and not cleared.task.container.command
    assert specs.updated_spec(current, {}).task.container.image == "searchsvc:v1.0"


@pytest.mark.parametrize(
    "image",
    [
        "searchsvc:v1.0",
        "shoal-busybox:1",
        "searchsvc:V1.0",
        "library/busybox:latest",
        "localhost:5000/team/app:1",
        "registry.example.com/a/b_c__d-e.f@sha256:" + "0" * 64,
        "[::1]:5000/x",
        "Registry.Example/x",
    ],
)
def test_valid_image_references(image: str) -> None:
    assert reference_problem(image) is None


@pytest.mark.parametrize(
    "image",
    ["SEARCHSVC:V1.0", "registry.io/App", "a//b", "a/", "-a", "a:b:c", "a" * 64, "x" * 256, "ubuntu:"],
)
def test_invalid_image_references(image: str) -> None:
    assert reference_problem(image) is not None


def test_scale_replicas_and_tail() -> None:
    with pytest.raises(specs.SpecError, match="replicas"):
        specs.replicas(HUGE)
    with pytest.raises(specs.SpecError, match="replicas"):
        specs.replicas("-1")
    assert specs.replicas("3") == 3
    assert specs.parse_tail("all") is None and specs.parse_tail("10") == 10
    with pytest.raises(specs.SpecError, match="--tail"):
        specs.parse_tail("many")


def _control() -> ControlAPI:
    return ControlAPI(ObjectStore(), node_id="n1")


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("node.inspect", {"nodes": [""]}, StatusCode.INVALID_ARGUMENT),
        ("node.update", {"node": ""}, StatusCode.INVALID_ARGUMENT),
        ("node.rm", {"nodes": []}, StatusCode.INVALID_ARGUMENT),
        ("node.rm", {"nodes": "n1"}, StatusCode.INVALID_ARGUMENT),
        ("service.inspect", {"services": [""]}, StatusCode.INVALID_ARGUMENT),
        ("service.rm", {"services": [""]}, StatusCode.INVALID_ARGUMENT),
        ("service.scale", {"service": "", "replicas": 1}, StatusCode.INVALID_ARGUMENT),
        ("service.scale", {"service": "web", "replicas": HUGE}, StatusCode.INVALID_ARGUMENT),
        ("service.update", {"service": ""}, StatusCode.INVALID_ARGUMENT),
        ("service.ps", {"services": [""]}, StatusCode.INVALID_ARGUMENT),
        ("swarm.update", {"task_history_limit": HUGE}, StatusCode.INVALID_ARGUMENT),
        ("swarm.update", {"task_history_limit": "x"}, StatusCode.INVALID_ARGUMENT),
        ("swarm.update", {"task_history_limit": ""}, StatusCode.INVALID_ARGUMENT),
        ("swarm.update", {"election_tick": HUGE}, StatusCode.INVALID_ARGUMENT),
        ("swarm.update", {"heartbeat_tick": "0"}, StatusCode.INVALID_ARGUMENT),
        ("swarm.update", {"cert_expiry": "9" * 30 + "h"}, StatusCode.INVALID_ARGUMENT),
        ("swarm.update", {"dispatcher_heartbeat": ""}, StatusCode.INVALID_ARGUMENT),
    ],
)
def test_control_api_refuses_before_touching_the_store(
    method: str, params: dict[str, Any], code: StatusCode
) -> None:
    control = _control()

    async def call() -> Any:
        return await control.handlers()[method](params)

    with pytest.raises(ControlError) as failure:
        asyncio.run(call())
    assert failure.value.code == code, failure.value.message
    assert "\n" not in failure.value.message


def test_forwarded_bodies_are_bounded() -> None:
    assert control_params(b'{"a": 1}') == {"a": 1}
    assert control_params(b"") == {}
    for body, reason in (
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b"[1]", "JSON object"),
        (b"{", "not JSON"),
        (b" " * (5 * 1024 * 1024), "too large"),
    ):
        with pytest.raises(ControlError, match=reason) as failure:
            control_params(body)
        assert failure.value.code == StatusCode.INVALID_ARGUMENT


WEIRD: list[Any] = [None, "", 5, -1, 1.5, True, [], [1], ["x"], {}, {"a": 1}, "x" * 10]
KEYS = (
    "name image replicas env labels mode nodes node services service availability label_add "
    "label_rm task_history_limit hostname stop_signal args mounts constraints force rollback "
    "cert_expiry external_cas role rotate raft_tick election_tick reserve_cpu update_parallelism "
    "health_cmd no_healthcheck entrypoint pull container_labels env_rm mount_rm publish publish_add "
    "publish_rm filters"
).split()


def test_any_json_value_in_any_parameter_is_refused_cleanly_or_accepted() -> None:
    """A scripted caller can send any JSON: every handler answers with a one-line refusal or
    does its job, never an internal error (a TypeError would reach the user as one)."""

    async def run() -> list[str]:
        store = ObjectStore()
        store.provider = InstantLog(store)  # type: ignore[assignment]
        control = ControlAPI(store, node_id="n1")

        def seed(tx: Any) -> None:
            tx.create(pb.Cluster(id="c1", spec=defaults.cluster_spec()))
            tx.create(pb.Node(id="n1", role=pb.NodeSpec.MANAGER))

        await store.update(seed)
        await control.handlers()["service.create"]({"name": "keep", "image": "a:1"})
        crashes = []
        for method, handler in control.handlers().items():
            for key in KEYS:
                for value in WEIRD:
                    params: dict[str, Any] = {"service": "keep", "node": "n1", "nodes": ["n1"]}
                    params.update(services=["keep"], name="other", image="a:1", role="worker")
                    if method in ("node.rm", "service.rm"):
                        params.update(nodes=["none"], services=["none"])
                    params[key] = value
                    try:
                        await handler(params)
                    except (ControlError, specs.SpecError):
                        pass
                    except Exception as exc:  # what the test looks for
                        crashes.append(f"{method} {key}={value!r}: {type(exc).__name__}: {exc}")
        return crashes

    assert asyncio.run(run()) == []


def test_availability() -> None:
    assert specs.parse_availability(None) == pb.NodeSpec.ACTIVE
    assert specs.parse_availability("drain") == pb.NodeSpec.DRAIN
    for bad in ("", "Drain", 1, ["active"]):
        with pytest.raises(specs.SpecError, match="--availability"):
            specs.parse_availability(bad)
