"""``--filter`` on node ls, service ls, service ps and node ps (issue 17, item 6).

The control API filters, with docker's rules: a key given twice matches either value,
different keys must all match; id and name are prefixes; label is KEY or KEY=VALUE. An unknown
key or value is one INVALID_ARGUMENT line naming the valid ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from shoal import states
from shoal.manager.controlapi import ControlAPI, ControlError
from shoal.proto import objects_pb2 as pb
from shoal.roles.transport import StatusCode
from shoal.store.memory import ObjectStore, Tx
from shoal.testing.objectstore import InstantLog


def _node(node_id: str, hostname: str, role: int, **labels: str) -> pb.Node:
    node = pb.Node(id=node_id, role=role)  # type: ignore[arg-type]
    node.description.hostname = hostname
    node.description.engine.labels["disk"] = "ssd" if role == pb.NodeSpec.MANAGER else "hdd"
    node.spec.membership = pb.NodeSpec.ACCEPTED
    node.spec.annotations.labels.update(labels)
    return node


def _service(service_id: str, name: str, *, global_mode: bool = False, **labels: str) -> pb.Service:
    service = pb.Service(id=service_id)
    service.spec.annotations.name = name
    service.spec.annotations.labels.update(labels)
    if global_mode:
        getattr(service.spec, "global").SetInParent()
    else:
        service.spec.replicated.replicas = 2
    return service


def _task(task_id: str, service: pb.Service, slot: int, node_id: str, desired: int) -> pb.Task:
    task = pb.Task(id=task_id, service_id=service.id, slot=slot, node_id=node_id, desired_state=desired)  # type: ignore[arg-type]
    task.service_annotations.CopyFrom(service.spec.annotations)
    return task


def _control() -> ControlAPI:
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]
    web = _service("s1web", "web", tier="front")
    api = _service("s2api", "api", tier="back")
    agent = _service("s3agent", "web-agent", global_mode=True)

    def seed(tx: Tx) -> None:
        tx.create(pb.Cluster(id="c1"))
        tx.create(_node("n1mgr", "alpha", pb.NodeSpec.MANAGER, zone="a"))
        tx.create(_node("n2wrk", "beta", pb.NodeSpec.WORKER, zone="b"))
        for service in (web, api, agent):
            tx.create(service)
        tx.create(_task("t1", web, 1, "n1mgr", states.RUNNING))
        tx.create(_task("t2", web, 2, "n2wrk", states.RUNNING))
        tx.create(_task("t3", web, 1, "n1mgr", states.SHUTDOWN))
        tx.create(_task("t4", api, 1, "n2wrk", states.RUNNING))

    asyncio.run(store.update(seed))
    return ControlAPI(store, node_id="n1mgr")


def _call(method: str, **params: Any) -> Any:
    return asyncio.run(_control().handlers()[method](params))


def _nodes(*filters: str) -> list[str]:
    return [row["Hostname"] for row in _call("node.ls", filters=list(filters))]


def _services(*filters: str) -> list[str]:
    return [row["Name"] for row in _call("service.ls", filters=list(filters))]


def _tasks(*filters: str, **params: Any) -> list[str]:
    return sorted(row["ID"] for row in _call("service.ps", filters=list(filters), **params)["tasks"])


def test_node_ls_filters() -> None:
    assert _nodes() == ["alpha", "beta"]
    assert _nodes("role=worker") == ["beta"]
    assert _nodes("role=manager", "role=worker") == ["alpha", "beta"]  # one key twice: OR
    assert _nodes("role=manager", "name=b") == []  # two keys: AND
    assert _nodes("name=al") == ["alpha"]
    assert _nodes("id=n2") == ["beta"]
    assert _nodes("membership=accepted") == ["alpha", "beta"]
    assert _nodes("membership=pending") == []
    assert _nodes("node.label=zone=b") == ["beta"]
    assert _nodes("node.label=zone") == ["alpha", "beta"]
    assert _nodes("label=disk=ssd") == ["alpha"]  # engine labels
    assert _nodes("label=zone") == []  # a node label is not an engine label


def test_service_ls_filters() -> None:
    assert _services("name=web") == ["web", "web-agent"]  # a prefix, as docker
    assert _services("name=web", "mode=replicated") == ["web"]
    assert _services("mode=global") == ["web-agent"]
    assert _services("label=tier") == ["api", "web"]
    assert _services("label=tier=back") == ["api"]
    assert _services("id=s1", "id=s2") == ["api", "web"]


def test_service_ps_and_node_ps_filters() -> None:
    assert _tasks(services=["web"]) == ["t1", "t2", "t3"]
    assert _tasks("desired-state=running", services=["web"]) == ["t1", "t2"]
    assert _tasks("desired-state=shutdown", services=["web", "api"]) == ["t3"]
    assert _tasks("node=beta", services=["web", "api"]) == ["t2", "t4"]
    assert _tasks("node=n1mgr", "desired-state=running", services=["web"]) == ["t1"]
    assert _tasks("name=web.2", services=["web"]) == ["t2"]
    assert _tasks("id=t1", "id=t4", services=["web", "api"]) == ["t1", "t4"]
    assert _tasks("label=tier=back", node="beta") == ["t4"]
    assert _tasks("desired-state=running", node="n1mgr") == ["t1"]


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        (
            "node.ls",
            {"filters": ["colour=red"]},
            "node ls takes id, label, membership, name, node.label, role",
        ),
        ("node.ls", {"filters": ["role=boss"]}, "role is one of manager, worker"),
        ("node.ls", {"filters": ["role"]}, "(as KEY=VALUE)"),
        ("service.ls", {"filters": ["node=x"]}, "service ls takes id, label, mode, name"),
        ("service.ls", {"filters": "name=web"}, "give KEY=VALUE strings"),
        ("service.ps", {"services": ["web"], "filters": ["mode=global"]}, "service ps takes desired-state"),
        ("service.ps", {"node": "alpha", "filters": ["desired-state=done"]}, "running, shutdown, accepted"),
    ],
)
def test_an_unknown_filter_is_one_line_naming_the_valid_keys(
    method: str, params: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ControlError) as refused:
        _call(method, **params)
    assert refused.value.code == StatusCode.INVALID_ARGUMENT
    assert expected in refused.value.message and "\n" not in refused.value.message
