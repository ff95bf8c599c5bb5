"""``network`` CLI parity with docker (issue 14): ``network rm`` and ``network inspect`` take each
name on its own (what can be removed or found is, one error line per name that is not, exit 1),
and ``network ls --filter`` has docker's network filters (``name``/``id`` match all or part,
``driver``, ``scope``, ``label``, ``type``, ``dangling``) with docker's refusals.

The CLI runs in a thread against the real control handlers (``ControlAPI``, ``NetworkControl``)
over an in-process store: only the socket between them is replaced. The real-daemon path is
covered in tests/test_networks.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result
from shoal.cli import common
from shoal.cli.main import cli
from shoal.client import ClientError
from shoal.manager import netcontrol
from shoal.manager.controlapi import ControlAPI, ControlError
from shoal.manager.methods import Handler
from shoal.manager.netcontrol import NetworkControl
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore
from shoal.testing.objectstore import instant_store


class _Swarm:
    """A store with the ingress network, its control handlers, and the CLI wired to them."""

    def __init__(self, store: ObjectStore, handlers: dict[str, Handler]) -> None:
        self.store = store
        self.handlers = handlers
        self.loop = asyncio.get_running_loop()

    def client(self, host: object = None) -> _Swarm:
        return self

    def call(self, method: str, **params: Any) -> Any:
        """What ``Client.call`` does, minus the socket: a refusal becomes a ``ClientError``."""

        async def answer() -> Any:
            return await self.handlers[method](params)

        future = asyncio.run_coroutine_threadsafe(answer(), self.loop)
        try:
            return future.result(timeout=30)
        except ControlError as exc:
            raise ClientError(exc.code.value, exc.message) from None

    async def shoal(self, *args: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, cli, ["-H", "unix:///nonexistent.sock", *args])

    async def names(self) -> list[str]:
        return sorted(n.spec.annotations.name for n in self.store.view.networks.all())


@pytest.fixture
async def swarm(monkeypatch: pytest.MonkeyPatch) -> _Swarm:
    store = await instant_store()
    handlers = {**ControlAPI(store, "m1").handlers(), **NetworkControl(store).handlers()}
    wired = _Swarm(store, handlers)
    monkeypatch.setattr(common, "Client", wired.client)
    await handlers["network.create"]({"name": "ingress", "ingress": True})  # as swarm init makes it
    for name, labels in [("front", ["tier=web"]), ("back", []), ("backend-db", ["tier=db"])]:
        await handlers["network.create"]({"name": name, "labels": labels})
    await handlers["service.create"]({"name": "web", "image": "alpine", "networks": ["front"]})
    return wired


async def test_rm_removes_every_name_it_can_and_reports_each_other(swarm: _Swarm) -> None:
    result = await swarm.shoal("network", "rm", "back", "nosuch", "front", "backend-db")
    assert result.exit_code == 1
    assert result.stdout.split() == ["back", "backend-db"]  # as given, in order
    assert result.stderr.splitlines() == [
        "Error: network nosuch not found",
        'Error: network "front" is in use by service(s) web: detach them '
        "(service update --network-rm) or remove them first",
    ]
    assert await swarm.names() == ["front", "ingress"]

    forced = await swarm.shoal("network", "rm", "-f", "gone", "front")
    assert forced.exit_code == 1 and forced.stdout == ""  # --force hides only "not found"
    assert forced.stderr.count("\n") == 1 and 'network "front" is in use' in forced.stderr
    assert (await swarm.shoal("network", "rm", "--force", "gone")).exit_code == 0


async def test_inspect_prints_those_found_and_a_line_per_missing_one(swarm: _Swarm) -> None:
    result = await swarm.shoal("network", "inspect", "front", "nosuch", "back", "gone")
    assert result.exit_code == 1
    assert [n["Name"] for n in json.loads(result.stdout)] == ["front", "back"]
    assert result.stderr.splitlines() == ["Error: No such network: nosuch", "Error: No such network: gone"]
    none = await swarm.shoal("network", "inspect", "gone")
    assert (none.exit_code, none.stdout, none.stderr) == (1, "[]\n", "Error: No such network: gone\n")

    templated = await swarm.shoal("network", "inspect", "--format", "{{.Name}} {{.Driver}}", "front", "back")
    assert (templated.exit_code, templated.stdout) == (0, "front overlay\nback overlay\n")
    typed = await swarm.shoal("inspect", "--type", "network", "-f", "{{.Scope}}", "backend-db")
    assert (typed.exit_code, typed.stdout) == (0, "swarm\n")


async def _listed(swarm: _Swarm, *filters: str) -> list[str]:
    args = [arg for f in filters for arg in ("--filter", f)]
    result = await swarm.shoal("network", "ls", "--format", "{{.Name}}", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.split()


async def test_ls_filters_as_docker(swarm: _Swarm) -> None:
    front_id = next(n.id for n in swarm.store.view.networks.all() if n.spec.annotations.name == "front")
    assert await _listed(swarm, "name=ack") == ["back", "backend-db"]  # all or part of the name
    assert await _listed(swarm, "name=ack", "name=ingr") == ["back", "backend-db", "ingress"]
    assert await _listed(swarm, "id=" + front_id[3:9]) == ["front"]  # all or part of the ID
    assert await _listed(swarm, "label=tier") == ["backend-db", "front"]
    assert await _listed(swarm, "label=tier=db", "name=back") == ["backend-db"]
    assert await _listed(swarm, "driver=overlay", "scope=swarm") == ["back", "backend-db", "front", "ingress"]
    assert await _listed(swarm, "driver=bridge") == [] and await _listed(swarm, "scope=local") == []
    assert await _listed(swarm, "type=custom") == ["back", "backend-db", "front", "ingress"]
    assert await _listed(swarm, "type=builtin") == []  # bridge, host, none: not swarm networks
    assert await _listed(swarm, "dangling=true") == ["back", "backend-db"]  # no service, not ingress
    assert await _listed(swarm, "dangling=0") == ["front", "ingress"]


@pytest.mark.parametrize(
    ("filters", "says"),
    [
        (
            ["colour=red"],
            "invalid filter 'colour': network ls takes dangling, driver, id, label, name, scope, type",
        ),
        (["name"], 'bad format of filter "name" (expected name=value)'),
        (["type=other"], "invalid filter: 'type'='other' (use custom or builtin)"),
        (["dangling=maybe"], "invalid value for filter 'dangling'"),
        (["dangling=true", "dangling=false"], 'got more than one value for filter key "dangling"'),
    ],
)
async def test_ls_refuses_a_bad_filter_in_one_line(swarm: _Swarm, filters: list[str], says: str) -> None:
    args = [arg for f in filters for arg in ("--filter", f)]
    result = await swarm.shoal("network", "ls", *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


async def test_ls_looks_for_services_using_a_network_only_for_a_dangling_filter(
    swarm: _Swarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    using = netcontrol.services_using

    def counted(services: list[pb.Service], network: pb.Network) -> list[str]:
        asked.append(network.spec.annotations.name)
        return using(services, network)

    monkeypatch.setattr(netcontrol, "services_using", counted)
    assert await _listed(swarm, "name=ack") == ["back", "backend-db"]
    assert asked == []  # before: once per network for any filter
    assert await _listed(swarm, "dangling=true", "name=ack") == ["back", "backend-db"]
    assert asked
