"""``shoal events`` logic (issue 17, item 9): docker's messages from store changes, docker's
filter rules, the ring with ``since``/``until``, and the CLI's line and template output."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from shoal.cli import events_cmd
from shoal.manager import events
from shoal.manager.controlapi import ControlError
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import Tx, copy
from shoal.testing.objectstore import instant_store


def _service(name: str = "web", replicas: int = 2, image: str = "img:1") -> pb.Service:
    service = pb.Service(id="svc1")
    service.spec.annotations.name = name
    service.spec.replicated.replicas = replicas
    service.spec.task.container.image = image
    return service


def _message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "Type": "service",
        "Action": "create",
        "Actor": {"ID": "svc1abc", "Attributes": {"name": "web"}},
        "scope": "swarm",
        "time": 100,
        "timeNano": 100_000_000_000,
    }
    message.update(overrides)
    return message


async def _recorded(changes: list[Any]) -> list[dict[str, Any]]:
    """Every message the ring records while ``changes`` (transaction functions) commit."""
    store = await instant_store()
    log = events.EventLog(store, clock=lambda: 1000.0)
    log.start()
    for change in changes:
        await store.update(change)
    await asyncio.sleep(0.01)  # watchers hear two loop turns after the apply
    for _ in range(5):
        await asyncio.sleep(0)
    await log.stop()
    return log.recent()


async def test_messages_in_docker_shape_with_the_attributes_docker_adds() -> None:
    def create(tx: Tx) -> None:
        tx.create(_service())
        node = pb.Node(id="node1", role=pb.NodeSpec.WORKER)
        node.description.hostname = "w1"
        node.status.state = pb.NodeStatus.READY
        tx.create(node)
        secret = pb.Secret(id="sec1")
        secret.spec.annotations.name = "pw"
        secret.spec.data = b"sealed-secret-value"
        tx.create(secret)
        tx.create(pb.Task(id="task1", service_id="svc1"))  # docker has no task events

    def update(tx: Tx) -> None:
        service = copy(tx.service("svc1"))  # type: ignore[arg-type]
        service.spec.replicated.replicas = 4
        service.spec.task.container.image = "img:2"
        service.update_status.state = pb.UpdateStatus.UPDATING
        service.registry_auth.spec.data = b"sealed-registry-credentials"
        tx.update(service)
        node = copy(tx.node("node1"))  # type: ignore[arg-type]
        node.status.state = pb.NodeStatus.DOWN
        node.spec.availability = pb.NodeSpec.DRAIN
        tx.update(node)

    def remove(tx: Tx) -> None:
        tx.delete("secret", "sec1")

    recorded = await _recorded([create, update, remove])
    summary = [(m["Type"], m["Action"], m["Actor"]["ID"]) for m in recorded]
    assert summary == [
        ("service", "create", "svc1"),
        ("node", "create", "node1"),
        ("secret", "create", "sec1"),
        ("service", "update", "svc1"),
        ("node", "update", "node1"),
        ("secret", "remove", "sec1"),
    ]
    assert recorded[3]["Actor"]["Attributes"] == {
        "name": "web",
        "image.old": "img:1",
        "image.new": "img:2",
        "replicas.old": "2",
        "replicas.new": "4",
        "updatestate.new": "updating",
    }
    assert recorded[4]["Actor"]["Attributes"] == {
        "name": "w1",  # a node without a spec name: its hostname
        "state.old": "ready",
        "state.new": "down",
        "availability.old": "active",
        "availability.new": "drain",
    }
    assert all(m["scope"] == "swarm" for m in recorded)
    # Events name objects, never carry what they hold: no secret value, no registry credentials.
    text = json.dumps(recorded)
    assert "sealed-secret-value" not in text and "sealed-registry-credentials" not in text
    assert recorded[0]["timeNano"] // 1_000_000_000 == recorded[0]["time"]
    assert recorded[5]["time"] == 1000  # a removal: the time this manager applied it


def test_a_new_object_kind_yields_events_without_change() -> None:
    """Networks (issue 14) or any later kind: taken from the change, named from its spec."""

    class Spec:
        def __init__(self) -> None:
            self.annotations = pb.Annotations(name="backend")

        def HasField(self, name: str) -> bool:
            return name == "annotations"

    class Network:
        id = "net1"
        spec = Spec()
        meta = pb.Meta(created_at=5.0, updated_at=5.0)

    change = events.Event(events.CREATE, "network", Network())
    message = events.message_of(change, now=9.0)
    assert message is not None
    assert (message["Type"], message["Action"], message["Actor"]) == (
        "network",
        "create",
        {"ID": "net1", "Attributes": {"name": "backend"}},
    )
    assert message["time"] == 5


@pytest.mark.parametrize(
    ("filters", "included"),
    [
        ([], True),
        (["type=service"], True),
        (["type=node"], False),
        (["type=node", "type=service"], True),  # one key twice: OR
        (["event=create"], True),
        (["event=remove"], False),
        (["service=web"], True),  # by name
        (["service=svc1"], True),  # by ID prefix
        (["service=api"], False),
        (["type=service", "event=remove"], False),  # two keys: AND
        (["scope=swarm"], True),
        (["scope=local"], False),
        (["node=w"], True),  # docker's fuzzy match: any actor whose ID or name starts so
        (["label=name=web"], True),
        (["label=name=api"], False),
    ],
)
def test_filters_follow_docker(filters: list[str], included: bool) -> None:
    query = events.parse_query({"filters": filters})
    assert events.matches(_message(), query.filters) is included


@pytest.mark.parametrize(
    ("params", "wrong"),
    [
        ({"filters": ["colour=red"]}, 'invalid --filter "colour=red": events takes config, event'),
        ({"filters": ["type=bogus"]}, 'invalid --filter "type=bogus": type is one of config'),
        ({"filters": ["service"]}, 'invalid --filter "service"'),
        ({"since": "yesterday"}, 'invalid since "yesterday"'),
        ({"since": 10, "until": 5}, "invalid --until: it is before --since"),
    ],
)
def test_bad_queries_are_one_line(params: dict[str, Any], wrong: str) -> None:
    with pytest.raises(ControlError) as caught:
        events.parse_query(params)
    assert caught.value.message.startswith(wrong), caught.value.message
    assert "\n" not in caught.value.message


async def test_follow_replays_since_then_streams_until() -> None:
    now = [100.0]
    store = await instant_store()
    log = events.EventLog(store, size=3, clock=lambda: now[0])
    for index in range(1, 5):
        log.record(events.Event(events.DELETE, "secret", pb.Secret(id=f"s{index}"), index=index))
        now[0] += 10
    # The ring keeps the last 3 (times 110, 120, 130); since 115: the two after it.
    query = events.EventQuery(since=115.0, until=125.0, filters={})
    got = [m async for m in log.follow(query)]  # now=140 > until: the replay, then the end
    assert [m["Actor"]["ID"] for m in got] == ["s3"]
    query = events.EventQuery(since=115.0, until=None, filters={"event": ["remove"]})
    stream = log.follow(query)
    assert [(await anext(stream))["Actor"]["ID"] for _ in range(2)] == ["s3", "s4"]
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # no event yet: the stream waits
    log.record(events.Event(events.DELETE, "secret", pb.Secret(id="s5"), index=5))
    async with log._grew:
        log._grew.notify_all()
    assert (await asyncio.wait_for(waiting, 5))["Actor"]["ID"] == "s5"
    await stream.aclose()


def test_cli_line_json_and_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    message = _message(
        Actor={"ID": "svc1abc", "Attributes": {"replicas.new": "4", "name": "web"}},
        timeNano=1_796_580_000_123_456_000,
    )
    line = events_cmd.event_line(message)
    assert line == "2026-12-06T18:00:00.123456000Z service create svc1abc (name=web, replicas.new=4)"
    template = (
        "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}} {{.Scope}} {{.Actor.Attributes.x}}"
    )
    events_cmd.check_format(template)
    assert events_cmd.apply_format(template, message) == "service create svc1abc web swarm <no value>"
    assert json.loads(events_cmd.apply_format("{{json .}}", message)) == message
    assert (
        events_cmd.apply_format("{{json .Actor.Attributes}}", message) == '{"replicas.new":"4","name":"web"}'
    )


@pytest.mark.parametrize(
    ("template", "wrong"),
    [
        ("{{.Colour}}", 'no field "Colour"'),
        ("{{.Actor.Name}}", 'no field "Actor.Name"'),
        ("{{.Type", "template actions beyond these"),
        ("{{range .}}{{end}}", "template actions beyond these"),
        ("{{.}}", "use {{json .}}"),
    ],
)
def test_bad_templates_are_one_line(template: str, wrong: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        events_cmd.check_format(template)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert wrong in err and err.count("\n") == 1, err
