"""Published ports: ``--publish`` parsing, add/rm, PORTS text, and the manager's allocation
(ingress ports unique in the swarm, 30000-32767 when not given, one line and nothing stored
on a conflict, refused while the swarm's network plugin has no routing mesh)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from shoal import defaults, ports
from shoal.manager import netobjects
from shoal.manager import ports as portalloc
from shoal.manager.controlapi import ControlAPI, ControlError
from shoal.proto import objects_pb2 as pb
from shoal.roles.network import FEATURE_INGRESS, FEATURES
from shoal.roles.transport import StatusCode
from shoal.store.memory import ObjectStore

TCP, UDP = pb.PortConfig.TCP, pb.PortConfig.UDP
INGRESS, HOST = pb.PortConfig.INGRESS, pb.PortConfig.HOST


@pytest.mark.parametrize(
    ("raw", "published", "target", "protocol", "mode"),
    [
        ("8080:80", 8080, 80, TCP, INGRESS),
        ("80", 0, 80, TCP, INGRESS),
        ("5353:53/udp", 5353, 53, UDP, INGRESS),
        ("published=8080,target=80", 8080, 80, TCP, INGRESS),
        ("published=8080,target=80,protocol=udp,mode=host", 8080, 80, UDP, HOST),
        ("target=80,mode=host", 0, 80, TCP, HOST),
    ],
)
def test_publish_syntaxes(raw: str, published: int, target: int, protocol: int, mode: int) -> None:
    port = ports.parse_publish(raw)
    assert (port.published_port, port.target_port, port.protocol, port.publish_mode) == (
        published,
        target,
        protocol,
        mode,
    )


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "PUBLISHED:TARGET"),
        ("8080:", "target port must be a number from 1 to 65535"),
        ("x:80", "published port must be a number"),
        ("8080:70000", "from 1 to 65535"),
        ("8080:80/sctp", 'protocol "sctp" is not supported; use tcp or udp'),
        ("8080-8081:80", "no addresses or ranges"),
        ("127.0.0.1:8080:80", "no addresses or ranges"),
        ("published=8080", "target is required"),
        ("target=80,mode=vip", 'mode "vip" is not supported; use ingress or host'),
        ("target=80,color=red", 'unknown key "color"'),
        ("target=80,target=81", '"target" given twice'),
        ("target=80,published", "is not KEY=VALUE"),
    ],
)
def test_bad_publish_values_are_one_line(raw: str, says: str) -> None:
    with pytest.raises(ports.PublishError) as refused:
        ports.parse_publish(raw)
    message = str(refused.value)
    assert says in message and "\n" not in message
    assert message.startswith(f'invalid --publish "{raw}"') or "twice" in message


def test_add_replaces_the_same_published_port_and_rm_goes_by_target() -> None:
    current = [ports.parse_publish("8080:80"), ports.parse_publish("9090:90/udp")]
    changed = ports.apply(current, ["8080:81", "7070:70"], ["90/udp"], "--publish-add")
    assert [ports.describe(p) for p in changed] == ["*:7070->70/tcp", "*:8080->81/tcp"]
    assert ports.apply(current, [], ["90"], "--publish-add") == current  # 90/tcp is not published
    with pytest.raises(ports.PublishError, match="8080/tcp is published twice"):
        ports.apply([], ["8080:80", "8080:81"], [], "--publish")


def test_ports_text_ls_shows_ingress_and_ps_host() -> None:
    both = [ports.parse_publish("8080:80"), ports.parse_publish("published=9090,target=90,mode=host")]
    assert ports.ls_text(both) == "*:8080->80/tcp"
    assert ports.ps_text(both) == "*:9090->90/tcp"


# --------------------------------------------------------------------------- allocation


class _InstantLog:
    """A store provider that commits every proposal at once (logic tests only)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store, self.index = store, 0

    async def propose(self, entry: bytes) -> int:
        self.index += 1
        self.store.apply(self.index, entry)
        return self.index


@pytest.fixture
def mesh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A swarm whose network plugin declares the routing mesh."""
    monkeypatch.setattr(portalloc, "network_features", lambda plugin: frozenset({FEATURE_INGRESS}))
    yield


def _run(*calls: tuple[str, dict[str, Any]]) -> tuple[list[Any], ObjectStore]:
    """Run control calls in order on a fresh one-manager store; a ControlError is returned."""

    async def run() -> tuple[list[Any], ObjectStore]:
        store = ObjectStore()
        store.provider = _InstantLog(store)  # type: ignore[assignment]
        control = ControlAPI(store, node_id="n1")
        await store.update(lambda tx: tx.create(pb.Cluster(id="c1", spec=defaults.cluster_spec())))
        await store.update(lambda tx: tx.create(netobjects.ingress_network([], 0)))  # as swarm init
        results: list[Any] = []
        for method, params in calls:
            try:
                results.append(await control.handlers()[method](params))
            except ControlError as exc:
                results.append(exc)
        return results, store

    return asyncio.run(run())


def _published(store: ObjectStore, name: str) -> list[str]:
    service = store.view.service_by_name(name)
    assert service is not None
    return [ports.describe(p) for p in service.endpoint.ports]


def test_ingress_ports_are_allocated_and_unique(mesh: None) -> None:
    results, store = _run(
        ("service.create", {"name": "a", "image": "x:1", "publish": ["8080:80", "81"]}),
        ("service.create", {"name": "b", "image": "x:1", "publish": ["82"]}),
        ("service.create", {"name": "c", "image": "x:1", "publish": ["published=8080,target=83"]}),
        ("service.create", {"name": "d", "image": "x:1", "publish": ["8080:84/udp"]}),
        ("service.update", {"service": "b", "publish_add": ["published=30000,target=85"]}),
    )
    assert _published(store, "a") == ["*:8080->80/tcp", "*:30000->81/tcp"]
    assert _published(store, "b") == ["*:30001->82/tcp"]
    conflict = results[2]
    assert isinstance(conflict, ControlError) and conflict.code == StatusCode.INVALID_ARGUMENT
    assert str(conflict) == (
        'port 8080/tcp is already published by service "a": choose another published port or '
        "remove it from that service"
    )
    assert store.view.service_by_name("c") is None  # nothing stored
    assert _published(store, "d") == ["*:8080->84/udp"]  # another protocol is another port
    assert isinstance(results[4], ControlError) and "30000/tcp is already published by service" in str(
        results[4]
    )
    assert _published(store, "b") == ["*:30001->82/tcp"]  # the update changed nothing


def test_a_service_keeps_its_ports_across_updates_and_frees_them(mesh: None) -> None:
    _, store = _run(
        ("service.create", {"name": "a", "image": "x:1", "publish": ["81"]}),
        ("service.update", {"service": "a", "env_add": ["K=V"], "publish_add": ["82"]}),
        ("service.update", {"service": "a", "publish_rm": ["81"]}),
        ("service.create", {"name": "b", "image": "x:1", "publish": ["83"]}),
    )
    assert _published(store, "a") == ["*:30001->82/tcp"]
    assert _published(store, "b") == ["*:30000->83/tcp"]  # freed by a's --publish-rm


def test_ingress_is_refused_without_a_routing_mesh_and_host_mode_is_not_allocated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(portalloc, "network_features", lambda plugin: frozenset())  # declares none
    results, store = _run(
        ("service.create", {"name": "a", "image": "x:1", "publish": ["8080:80"]}),
        ("service.create", {"name": "b", "image": "x:1", "publish": ["published=8080,target=80,mode=host"]}),
        ("service.create", {"name": "c", "image": "x:1", "publish": ["published=8080,target=80,mode=host"]}),
        ("service.update", {"service": "b", "publish_add": ["90"]}),
    )
    refused = results[0]
    assert isinstance(refused, ControlError) and refused.code == StatusCode.INVALID_ARGUMENT
    assert str(refused) == (
        'ingress publishing (the routing mesh) is not available with this swarm\'s network plugin "overlay" '
        "yet: publish in host mode, e.g. --publish published=8080,target=80,protocol=tcp,mode=host"
    )
    assert store.view.service_by_name("a") is None
    # host mode: the same port in two services is the scheduler's business (one per node)
    assert _published(store, "b") == _published(store, "c") == ["*:8080->80/tcp"]
    assert isinstance(results[3], ControlError)
    assert _published(store, "b") == ["*:8080->80/tcp"]


def test_features_are_read_from_the_installed_plugin() -> None:
    assert portalloc.network_features("overlay") <= FEATURES
    assert portalloc.network_features("not-installed") == frozenset()
