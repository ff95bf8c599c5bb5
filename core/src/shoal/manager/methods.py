"""The control API's method registry: every control method declared once.

Each entry names the method, whether it reads or writes (a read is answered from the local
replica when there is no leader, marked stale; a write is forwarded to the leader and refused
without one), its request type (``requests.py``: the JSON params parsed and checked before the
handler runs), the shape of its reply, and the component and coroutine that serve it. The
tables that used to be kept by hand from it are derived here: the handler table
(``bind``), the read set (``READ_METHODS``) and the local socket's control methods
(``NAMES``). A method that is not in ``CONTROL_METHODS`` cannot be called: no handler is
bound for it, the local socket answers ``unknown method`` and the leader ``UNIMPLEMENTED``.

This is kernel plumbing, not plugin API: plugins neither see nor extend it.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shoal.manager import requests as rq

#: What the local socket, the remote listener and a forwarding follower call: JSON params in,
#: a JSON-shaped reply out.
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Owner(enum.Enum):
    """The component whose coroutine serves a method (the manager hands each one to ``bind``)."""

    CONTROL = "control"  # manager/controlapi.py: ControlAPI
    MANAGER = "manager"  # daemon/manager.py: Manager (needs the store membership)
    SECRETS = "secrets"  # manager/secrets.py: SecretsControl
    NETWORKS = "networks"  # manager/netcontrol.py: NetworkControl


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"


READ, WRITE = Access.READ, Access.WRITE


@dataclass(frozen=True)
class ControlMethod:
    name: str
    access: Access
    #: Parses the JSON params into what the handler takes (``requests.py``).
    request: rq.RequestType
    #: The reply's JSON shape: ``dict`` (an object) or ``list`` (an array).
    reply: type
    owner: Owner
    #: The owner's coroutine that serves the method.
    handler: str


def _m(
    name: str, access: Access, request: rq.RequestType, reply: type, owner: Owner, handler: str
) -> ControlMethod:
    return ControlMethod(name, access, request, reply, owner, handler)


C, M, S, N = Owner.CONTROL, Owner.MANAGER, Owner.SECRETS, Owner.NETWORKS

CONTROL_METHODS: dict[str, ControlMethod] = {
    m.name: m
    for m in (
        _m("node.ls", READ, rq.NodeList, list, C, "node_ls"),
        _m("node.inspect", READ, rq.NodeInspect, list, C, "node_inspect"),
        _m("node.update", WRITE, rq.NodeUpdate, dict, C, "node_update"),
        _m("node.rm", WRITE, rq.NodeRemove, list, C, "node_rm"),
        _m("node.promote", WRITE, rq.NodeRefs, list, M, "node_promote"),
        _m("node.demote", WRITE, rq.NodeRefs, list, M, "node_demote"),
        _m("service.create", WRITE, rq.Options, dict, C, "service_create"),
        _m("service.ls", READ, rq.ServiceList, list, C, "service_ls"),
        _m("service.inspect", READ, rq.ServiceRefs, list, C, "service_inspect"),
        _m("service.ps", READ, rq.TaskList, dict, C, "service_ps"),
        _m("service.scale", WRITE, rq.ServiceScale, dict, C, "service_scale"),
        _m("service.update", WRITE, rq.ServiceUpdate, dict, C, "service_update"),
        _m("service.rollback", WRITE, rq.ServiceRef, dict, C, "service_rollback"),
        _m("service.rm", WRITE, rq.ServiceRefs, list, C, "service_rm"),
        _m("task.inspect", READ, rq.TaskRefs, list, C, "task_inspect"),
        _m("swarm.inspect", READ, rq.NoParams, dict, C, "swarm_inspect"),
        _m("swarm.update", WRITE, rq.Options, dict, C, "swarm_update"),
        _m("swarm.join_token", WRITE, rq.JoinToken, dict, C, "swarm_join_token"),
        _m("swarm.unlock_key", WRITE, rq.UnlockKey, dict, M, "swarm_unlock_key"),
        _m("network.create", WRITE, rq.Options, dict, N, "network_create"),
        _m("network.ls", READ, rq.NetworkList, list, N, "network_ls"),
        _m("network.inspect", READ, rq.NetworkRefs, list, N, "network_inspect"),
        _m("network.rm", WRITE, rq.NetworkRefs, list, N, "network_rm"),
        _m("secret.create", WRITE, rq.Options, dict, S, "secret_create"),
        _m("secret.ls", READ, rq.NoParams, list, S, "secret_ls"),
        _m("secret.inspect", READ, rq.SecretRefs, list, S, "secret_inspect"),
        _m("secret.rm", WRITE, rq.SecretRefs, list, S, "secret_rm"),
        _m("config.create", WRITE, rq.Options, dict, S, "config_create"),
        _m("config.ls", READ, rq.NoParams, list, S, "config_ls"),
        _m("config.inspect", READ, rq.ConfigRefs, list, S, "config_inspect"),
        _m("config.rm", WRITE, rq.ConfigRefs, list, S, "config_rm"),
    )
}

#: Every control method's name (the local socket serves exactly these through the manager).
NAMES: tuple[str, ...] = tuple(CONTROL_METHODS)
#: The methods that only read: with no leader they are answered locally, marked stale.
READ_METHODS: frozenset[str] = frozenset(n for n, m in CONTROL_METHODS.items() if m.access is READ)


def _bound(method: ControlMethod, serve: Callable[[Any], Awaitable[Any]]) -> Handler:
    async def handle(params: dict[str, Any]) -> Any:
        return await serve(method.request.parse(params))

    handle.__name__ = handle.__qualname__ = serve.__name__
    return handle


def bind(owners: Mapping[Owner, object]) -> dict[str, Handler]:
    """The handler table for the methods the given components serve (a method whose owner is
    not given stays unbound, so a ``ControlAPI`` on its own serves only its own)."""
    return {
        name: _bound(method, getattr(owners[method.owner], method.handler))
        for name, method in CONTROL_METHODS.items()
        if method.owner in owners
    }


def owned_by(owner: Owner) -> tuple[str, ...]:
    """The methods ``owner`` serves."""
    return tuple(n for n, m in CONTROL_METHODS.items() if m.owner is owner)
