"""The control method registry (``manager/methods.py``): every table is derived from it.

The handler table a manager serves, the read set (answered locally without a leader), the
local socket's methods and the names the CLI calls must all agree with the registry; a
handler written outside it is caught here, and a method outside it cannot be called.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from shoal.daemon import manager as daemon_manager
from shoal.daemon.manager import Manager
from shoal.daemon.node import Daemon, DaemonConfig
from shoal.manager import methods
from shoal.manager.controlapi import ControlAPI, ControlError
from shoal.manager.netcontrol import NetworkControl
from shoal.manager.secrets import SecretsControl
from shoal.proto import objects_pb2 as pb
from shoal.roles.transport import StatusCode
from shoal.store.memory import ObjectStore
from shoal.testing.objectstore import InstantLog

OWNER_CLASSES: dict[methods.Owner, type] = {
    methods.Owner.CONTROL: ControlAPI,
    methods.Owner.MANAGER: Manager,
    methods.Owner.SECRETS: SecretsControl,
    methods.Owner.NETWORKS: NetworkControl,
}
#: What a control handler is called: the method's name with "_" for "." (``service_ls``).
HANDLER_NAME = re.compile(r"(node|service|swarm|task|network|secret|config)_[a-z_]+\Z")
#: The local socket's own methods, served by the daemon itself (no store needed).
NODE_METHODS = {"swarm.init", "swarm.join", "swarm.leave", "swarm.unlock", "info"}
STREAM_METHODS = {"service.logs", "events"}
CLI = Path(__file__).resolve().parents[1] / "src" / "shoal" / "cli"


def _manager(tmp_path: Path) -> Manager:
    """A manager as the daemon builds one; nothing is started (no store, no transport)."""
    none: Any = None
    return Manager(
        node_id="m1",
        cluster_id="c1",
        advertise_addr="127.0.0.1:1",
        store_provider=none,
        ca=none,
        scheduler_factory=none,
        transport=none,
        tls=none,
        state_dir=tmp_path,
    )


def test_a_manager_serves_exactly_the_registered_methods(tmp_path: Path) -> None:
    assert set(_manager(tmp_path).control.handlers()) == set(methods.CONTROL_METHODS)


def test_the_read_set_is_derived_and_holds_only_reads() -> None:
    assert daemon_manager.READ_METHODS is methods.READ_METHODS
    # Pinned: a write in this set would be answered (and done) on a replica without a leader.
    assert methods.READ_METHODS == {
        "node.ls",
        "node.inspect",
        "service.ls",
        "service.inspect",
        "service.ps",
        "task.inspect",
        "swarm.inspect",
        "network.ls",
        "network.inspect",
        "secret.ls",
        "secret.inspect",
        "config.ls",
        "config.inspect",
    }


def test_the_local_socket_forwards_exactly_the_registered_methods(tmp_path: Path) -> None:
    daemon = Daemon(DaemonConfig(state_dir=tmp_path, socket=tmp_path / "shoal.sock"))
    daemon._register_api()
    assert set(daemon.api.unary) - NODE_METHODS == set(methods.CONTROL_METHODS)
    assert set(daemon.api.streams) == STREAM_METHODS


@pytest.mark.parametrize("owner", list(methods.Owner))
def test_every_handler_is_registered_with_its_request_type(owner: methods.Owner) -> None:
    """A coroutine named like a handler on a serving class must be in the registry (so one
    added outside it fails here), and each registered one takes the registry's request type."""
    cls = OWNER_CLASSES[owner]
    registered = {m.handler: m for m in methods.CONTROL_METHODS.values() if m.owner is owner}
    for name, _function in inspect.getmembers(cls, inspect.iscoroutinefunction):
        if HANDLER_NAME.match(name):
            assert name in registered, f"{cls.__name__}.{name} looks like a handler but is not registered"
    for name, method in registered.items():
        function = getattr(cls, name, None)
        assert inspect.iscoroutinefunction(function), f"{method.name}: {cls.__name__}.{name} is missing"
        (_, param) = list(inspect.signature(function).parameters.values())[:2]
        assert str(param.annotation) == f"rq.{method.request.__name__}", method.name


def _cli_method_names() -> set[str]:
    """Every "family.verb" string the CLI passes to ``call``/``stream``."""
    names: set[str] = set()
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called not in ("call", "stream"):
                continue
            for arg in node.args:
                for leaf in ast.walk(arg):
                    if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                        if re.fullmatch(r"[a-z]+\.[a-z_]+|info|events", leaf.value):
                            names.add(leaf.value)
    return names


def test_every_method_the_cli_calls_is_served() -> None:
    called = _cli_method_names()
    assert {"service.create", "node.promote", "node.demote", "events"} <= called  # the scan works
    assert called <= set(methods.CONTROL_METHODS) | NODE_METHODS | STREAM_METHODS


def test_a_method_outside_the_registry_cannot_be_called(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    with pytest.raises(ControlError) as caught:
        asyncio.run(manager.call("service.drop_everything", {}))
    assert caught.value.code == StatusCode.UNIMPLEMENTED
    assert caught.value.message == "unknown method service.drop_everything"


def test_a_control_api_alone_binds_only_its_own_methods() -> None:
    bound = set(ControlAPI(ObjectStore(), "n1").handlers())
    assert bound == set(methods.owned_by(methods.Owner.CONTROL))
    assert "node.promote" not in bound and "secret.create" not in bound


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("service.scale", {"service": "web", "replicas": -1}, "replicas"),
        ("swarm.join_token", {"role": "boss"}, 'unknown role "boss": use worker or manager'),
        ("service.rm", {"services": "web"}, "invalid service list: give service IDs or names"),
        ("service.inspect", {}, "give at least one service ID or name"),
        ("node.inspect", {"nodes": [1]}, "invalid node list: give node IDs or names"),
        ("service.ls", {"filters": ["colour=red"]}, "colour"),
        ("node.update", {"node": "n1", "availability": "gone"}, 'invalid --availability "gone"'),
        (
            "node.update",
            {"node": "n1", "label_add": ["=v"]},
            'invalid --label-add "=v": use KEY=VALUE or KEY',
        ),
        ("node.rm", {"nodes": [""]}, 'a node ID or name is required, not ""'),
    ],
)
def test_a_typed_request_refuses_bad_params_in_one_line(
    method: str, params: dict[str, Any], message: str
) -> None:
    handler = ControlAPI(ObjectStore(), "n1").handlers()[method]
    with pytest.raises(ControlError) as caught:
        asyncio.run(handler(params))
    assert caught.value.code == StatusCode.INVALID_ARGUMENT
    assert message in caught.value.message and "\n" not in caught.value.message


async def test_replies_have_the_registered_shape(tmp_path: Path) -> None:
    """Each call below answers with its method's registered reply type (object or array)."""
    manager = _manager(tmp_path)
    manager.store.provider = InstantLog(manager.store)  # type: ignore[assignment]
    await manager.store.update(lambda tx: tx.create(pb.Cluster(id="c1")))
    handlers = manager.control.handlers()
    calls: list[tuple[str, dict[str, Any]]] = [
        ("service.create", {"name": "web", "image": "busybox", "replicas": 1}),
        ("service.ls", {}),
        ("service.inspect", {"services": ["web"]}),
        ("service.ps", {"services": ["web"]}),
        ("service.scale", {"service": "web", "replicas": 2}),
        ("service.update", {"service": "web", "env_add": ["A=1"]}),
        ("service.rollback", {"service": "web"}),
        ("node.ls", {}),
        ("network.create", {"name": "front"}),
        ("network.ls", {}),
        ("network.inspect", {"networks": ["front"]}),
        ("network.rm", {"networks": ["front"]}),
        ("config.create", {"name": "app", "data": "eA=="}),
        ("config.ls", {}),
        ("config.inspect", {"configs": ["app"]}),
        ("config.rm", {"configs": ["app"]}),
        ("secret.ls", {}),
        ("service.rm", {"services": ["web"]}),
    ]
    for name, params in calls:
        reply = await handlers[name](params)
        assert isinstance(reply, methods.CONTROL_METHODS[name].reply), (name, reply)
