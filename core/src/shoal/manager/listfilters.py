"""``--filter`` for ``node ls``, ``service ls``, ``service ps`` and ``node ps``, with docker's rules.

The manager filters (the control API takes ``filters``: a list of ``KEY=VALUE`` strings), so
that every client, and a call a follower forwards to the leader, gets the same rows and the
same one-line refusal of an unknown key.

docker's semantics: one key given several times matches any of its values, different keys
must all match. ``id`` and ``name`` match a prefix (SwarmKit's ``IDPrefixes`` and
``NamePrefixes``; a task's name is ``SERVICE.SLOT.TASKID``), ``label`` is ``KEY`` or
``KEY=VALUE``. On ``node ls``, ``label`` is an engine label and ``node.label`` a label set with
``node update --label-add``.

``network ls`` follows docker's network filters instead (moby ``daemon/network/filter.go``):
``id`` and ``name`` match all or part of the ID or name, ``driver`` and ``scope`` the whole
value, ``type`` is ``custom`` or ``builtin`` and ``dangling`` ``true``/``false``; its refusals
use docker's words (``invalid filter 'X'``) and name the valid keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shoal import states
from shoal.proto import objects_pb2 as pb
from shoal.tasktemplates import task_name

Filters = dict[str, list[str]]

#: The keys each list takes, with the values a key is limited to (None: any value).
NODE_KEYS: Mapping[str, tuple[str, ...] | None] = {
    "id": None,
    "label": None,
    "membership": ("accepted", "pending"),
    "name": None,
    "node.label": None,
    "role": ("manager", "worker"),
}
SERVICE_KEYS: Mapping[str, tuple[str, ...] | None] = {
    "id": None,
    "label": None,
    "mode": ("replicated", "global", "replicated-job", "global-job"),
    "name": None,
}
TASK_KEYS: Mapping[str, tuple[str, ...] | None] = {
    "desired-state": ("running", "shutdown", "accepted"),
    "id": None,
    "label": None,
    "name": None,
    "node": None,
}

_DANGLING = ("true", "1", "false", "0")
_NETWORK_TYPES = ("custom", "builtin")
NETWORK_KEYS: Mapping[str, tuple[str, ...] | None] = {
    "dangling": _DANGLING,
    "driver": None,
    "id": None,
    "label": None,
    "name": None,
    "scope": None,
    "type": _NETWORK_TYPES,
}

_DESIRED = {"running": states.RUNNING, "shutdown": states.SHUTDOWN, "accepted": states.ACCEPTED}


class FilterError(ValueError):
    """A filter the list does not take; the message names the valid keys or values."""


def _items(raw: Any, command: str) -> list[str]:
    """The raw ``--filter`` list, refused unless it is a list of strings (what every list takes)."""
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise FilterError(f"invalid --filter for {command}: give KEY=VALUE strings")
    return raw


def parse(raw: Any, keys: Mapping[str, tuple[str, ...] | None], command: str) -> Filters:
    """``["name=web", "label=tier"]`` as ``{"name": ["web"], "label": ["tier"]}``, checked."""
    if raw is None:
        return {}
    filters: Filters = {}
    valid = ", ".join(keys)
    for item in _items(raw, command):
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            raise FilterError(f'invalid --filter "{item}": {command} takes {valid} (as KEY=VALUE)')
        allowed = keys[key]
        if allowed is not None and value not in allowed:
            raise FilterError(f'invalid --filter "{item}": {key} is one of {", ".join(allowed)}')
        filters.setdefault(key, []).append(value)
    return filters


def parse_network(raw: Any) -> Filters:
    """``network ls``'s filters, checked with docker's words (and the valid keys, so the
    line says how to fix it)."""
    if raw is None:
        return {}
    filters: Filters = {}
    for item in _items(raw, "network ls"):
        key, sep, value = item.partition("=")
        if not sep:
            raise FilterError(f'bad format of filter "{item}" (expected name=value)')
        if key not in NETWORK_KEYS:
            raise FilterError(f"invalid filter '{key}': network ls takes {', '.join(NETWORK_KEYS)}")
        filters.setdefault(key, []).append(value)
    for value in filters.get("type", []):
        if value not in _NETWORK_TYPES:
            raise FilterError(f"invalid filter: 'type'='{value}' (use custom or builtin)")
    dangling = filters.get("dangling", [])
    if len(dangling) > 1:
        raise FilterError('got more than one value for filter key "dangling"')
    if dangling and dangling[0] not in _DANGLING:
        raise FilterError(
            'invalid value for filter \'dangling\', must be "true" (or "1"), or "false" (or "0")'
        )
    return filters


def _labels_match(labels: Mapping[str, str], wanted: list[str]) -> bool:
    """Every ``KEY`` or ``KEY=VALUE`` given must be present (docker ANDs label filters)."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _prefix(text: str, wanted: list[str]) -> bool:
    return any(text.startswith(value) for value in wanted)


def _part(text: str, wanted: list[str]) -> bool:
    return any(value in text for value in wanted)


def _all(filters: Filters, tests: Mapping[str, Callable[[list[str]], bool]]) -> bool:
    return all(tests[key](values) for key, values in filters.items())


def node_matches(node: pb.Node, filters: Filters) -> bool:
    if not filters:  # the common listing: no per-row tests built
        return True
    role = "manager" if node.role == pb.NodeSpec.MANAGER else "worker"
    membership = "accepted" if node.spec.membership == pb.NodeSpec.ACCEPTED else "pending"
    names = (node.description.hostname, node.spec.annotations.name)
    return _all(
        filters,
        {
            "id": lambda v: _prefix(node.id, v),
            "name": lambda v: any(_prefix(name, v) for name in names if name),
            "role": lambda v: role in v,
            "membership": lambda v: membership in v,
            "label": lambda v: _labels_match(node.description.engine.labels, v),
            "node.label": lambda v: _labels_match(node.spec.annotations.labels, v),
        },
    )


def service_matches(service: pb.Service, filters: Filters) -> bool:
    if not filters:  # the common listing: no per-row tests built
        return True
    mode = (service.spec.WhichOneof("mode") or "replicated").replace("_", "-")
    return _all(
        filters,
        {
            "id": lambda v: _prefix(service.id, v),
            "name": lambda v: _prefix(service.spec.annotations.name, v),
            "mode": lambda v: mode in v,
            "label": lambda v: _labels_match(service.spec.annotations.labels, v),
        },
    )


def task_matches(task: pb.Task, filters: Filters, node_hostname: str) -> bool:
    """``node`` is the node's ID (or a prefix of it) or its hostname, as docker resolves it."""
    if not filters:  # the common listing: no per-row tests built
        return True
    return _all(
        filters,
        {
            "id": lambda v: _prefix(task.id, v),
            "name": lambda v: _prefix(task_name(task), v),
            "node": lambda v: bool(task.node_id) and (_prefix(task.node_id, v) or node_hostname in v),
            "desired-state": lambda v: any(task.desired_state == _DESIRED[s] for s in v),
            "label": lambda v: _labels_match(task.service_annotations.labels, v),
        },
    )


def network_matches(network: pb.Network, in_use: Callable[[], bool], filters: Filters) -> bool:
    """docker's network filters over one swarm network; ``in_use()``: a service is attached
    (for ``ingress``: it is the routing mesh, never dangling, as docker's has its load
    balancer), asked only for a ``dangling`` filter. Every swarm network is user-defined in
    docker's sense (``ingress`` too), so ``type=custom`` matches them all and
    ``type=builtin`` (bridge, host, none) none."""
    return _all(
        filters,
        {
            "id": lambda v: _part(network.id, v),
            "name": lambda v: _part(network.spec.annotations.name, v),
            "driver": lambda v: (network.spec.driver or "overlay") in v,
            "scope": lambda v: "swarm" in v,
            "label": lambda v: _labels_match(network.spec.annotations.labels, v),
            "type": lambda v: "custom" in v,
            "dangling": lambda v: (not network.spec.ingress and not in_use()) == (v[0] in ("true", "1")),
        },
    )
