"""``--filter`` for ``node ls``, ``service ls``, ``service ps`` and ``node ps``, with docker's rules.

The manager filters (the control API takes ``filters``: a list of ``KEY=VALUE`` strings), so
that every client, and a call a follower forwards to the leader, gets the same rows and the
same one-line refusal of an unknown key.

docker's semantics: one key given several times matches any of its values, different keys
must all match. ``id`` and ``name`` match a prefix (SwarmKit's ``IDPrefixes`` and
``NamePrefixes``; a task's name is ``SERVICE.SLOT.TASKID``), ``label`` is ``KEY`` or
``KEY=VALUE``. On ``node ls``, ``label`` is an engine label and ``node.label`` a label set with
``node update --label-add``.
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

_DESIRED = {"running": states.RUNNING, "shutdown": states.SHUTDOWN, "accepted": states.ACCEPTED}


class FilterError(ValueError):
    """A filter the list does not take; the message names the valid keys or values."""


def parse(raw: Any, keys: Mapping[str, tuple[str, ...] | None], command: str) -> Filters:
    """``["name=web", "label=tier"]`` as ``{"name": ["web"], "label": ["tier"]}``, checked."""
    if raw is None:
        return {}
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise FilterError(f"invalid --filter for {command}: give KEY=VALUE strings")
    filters: Filters = {}
    valid = ", ".join(keys)
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            raise FilterError(f'invalid --filter "{item}": {command} takes {valid} (as KEY=VALUE)')
        allowed = keys[key]
        if allowed is not None and value not in allowed:
            raise FilterError(f'invalid --filter "{item}": {key} is one of {", ".join(allowed)}')
        filters.setdefault(key, []).append(value)
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


def _all(filters: Filters, tests: Mapping[str, Callable[[list[str]], bool]]) -> bool:
    return all(tests[key](values) for key, values in filters.items())


def node_matches(node: pb.Node, filters: Filters) -> bool:
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
