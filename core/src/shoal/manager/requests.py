"""Typed control requests: the JSON params of a control call, parsed and checked in one place.

A control call arrives as a JSON object (from the local socket, the remote listener or a
follower forwarding to the leader). ``methods.py`` parses it with the method's request type
before the handler runs, so a handler gets named, typed fields instead of ``dict[str, Any]``
and every malformed value is refused here with the same one line as before.

Methods whose params are a whole service or cluster spec (``service.create``,
``service.update``, ``swarm.update``) keep the options as a dict: ``specs.py`` owns their
validation and its messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

from shoal.manager import listfilters
from shoal.proto import objects_pb2 as pb
from shoal.roles.transport import StatusCode
from shoal.specs import SpecError, parse_availability, replicas


class RequestType(Protocol):
    """A request class: ``parse`` checks the JSON params (one ``ControlError`` line when
    malformed) and returns the request the handler takes."""

    def parse(self, params: Mapping[str, Any], /) -> Any: ...


def _control_error(message: str) -> Exception:
    from shoal.manager.controlapi import ControlError  # controlapi imports this module

    return ControlError(StatusCode.INVALID_ARGUMENT, message)


def filters(
    params: Mapping[str, Any], keys: Mapping[str, tuple[str, ...] | None], command: str
) -> listfilters.Filters:
    """The call's ``filters`` (``--filter``), checked: an unknown key is one line naming the valid ones."""
    try:
        return listfilters.parse(params.get("filters"), keys, command)
    except listfilters.FilterError as exc:
        raise _control_error(str(exc)) from None


def refs(params: Mapping[str, Any], key: str, what: str, *, required: bool = True) -> list[str]:
    """A list of node or service references: strings, none empty (an empty one is a mistake,
    not "self" or "every"), and at least one unless ``required`` is false."""
    values = params.get(key)
    if values is None:
        values = []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _control_error(f"invalid {what} list: give {what} IDs or names")
    if required and not values:
        raise _control_error(f"give at least one {what} ID or name")
    return values


def ref(params: Mapping[str, Any], key: str) -> str:
    """One reference as the handlers always read it (``str(params.get(key) or "")``): an empty
    one is refused by the lookup with its own line."""
    return str(params.get(key) or "")


@dataclass(frozen=True)
class NoParams:
    """A method that takes no parameters (any given are ignored, as before)."""

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        return cls()


@dataclass(frozen=True)
class Options:
    """A method whose params are command options validated by ``specs.py`` (kept as given)."""

    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        return cls(dict(params))


@dataclass(frozen=True)
class _Filtered:
    """A listing with ``--filter``: the keys it takes and the command its errors name."""

    KEYS: ClassVar[Mapping[str, tuple[str, ...] | None]]
    COMMAND: ClassVar[str]
    filters: listfilters.Filters

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        return cls(filters(params, cls.KEYS, cls.COMMAND))


@dataclass(frozen=True)
class _Refs:
    """At least one reference, under ``KEY`` (its errors name ``WHAT``)."""

    KEY: ClassVar[str]
    WHAT: ClassVar[str]
    refs: list[str]

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        return cls(refs(params, cls.KEY, cls.WHAT))


class NodeList(_Filtered):
    """``node ls [--filter]``."""

    KEYS, COMMAND = listfilters.NODE_KEYS, "node ls"


class ServiceList(_Filtered):
    """``service ls [--filter]``."""

    KEYS, COMMAND = listfilters.SERVICE_KEYS, "service ls"


@dataclass(frozen=True)
class NetworkList:
    """``network ls [--filter]``: docker's network filters and words (``listfilters.parse_network``)."""

    filters: listfilters.Filters

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        try:
            return cls(listfilters.parse_network(params.get("filters")))
        except listfilters.FilterError as exc:
            raise _control_error(str(exc)) from None


class NodeRefs(_Refs):
    """``node promote|demote NODE...``."""

    KEY, WHAT = "nodes", "node"


class ServiceRefs(_Refs):
    """``service inspect|rm SERVICE...``."""

    KEY, WHAT = "services", "service"


@dataclass(frozen=True)
class NodeInspect:
    """``node inspect [NODE...]``: this node when none is named."""

    nodes: list[str]

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        return cls(refs(params, "nodes", "node", required=False) or ["self"])


@dataclass(frozen=True)
class ServiceRef:
    """``service rollback SERVICE``."""

    service: str

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        return cls(ref(params, "service"))


@dataclass(frozen=True)
class TaskList:
    """``service ps SERVICE...`` or ``node ps NODE`` (``node`` set): the tasks to list.
    ``compact``: rows as lists of ``tasklist.COMPACT_COLUMNS`` (``columns``, ``rows``) instead
    of task dicts (``tasks``); a daemon that predates it ignores it and sends ``tasks``.
    ``pieces`` (with ``compact``): the same reply, its rows written as they are built
    (``tasklist.StreamedRows``: the handler returns it, for ``yieldingjson`` to write)."""

    node: str | None
    services: list[str]
    filters: listfilters.Filters
    compact: bool = False
    pieces: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        node = params.get("node")
        wanted = filters(params, listfilters.TASK_KEYS, "node ps" if node is not None else "service ps")
        compact = params.get("compact") is True
        pieces = params.get("pieces") is True
        if node is not None:
            return cls(str(node), [], wanted, compact, pieces)
        return cls(None, refs(params, "services", "service"), wanted, compact, pieces)


@dataclass(frozen=True)
class ServiceScale:
    """``service scale SERVICE=N``: the count is checked before the service is looked up."""

    service: str
    replicas: int

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        try:
            count = replicas(params.get("replicas"))
        except SpecError as exc:
            raise _control_error(str(exc)) from None
        return cls(ref(params, "service"), count)


@dataclass(frozen=True)
class ServiceUpdate:
    """``service update SERVICE [options]``, ``--rollback``, or a stack's whole new spec (``replace``)."""

    service: str
    rollback: bool
    options: dict[str, Any]

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        return cls(ref(params, "service"), bool(params.get("rollback")), dict(params))


@dataclass(frozen=True)
class JoinToken:
    """``swarm join-token [--rotate] worker|manager``."""

    role: str
    rotate: bool

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        role = str(params.get("role") or "")
        if role not in ("worker", "manager"):
            raise _control_error(f'unknown role "{role}": use worker or manager')
        return cls(role, bool(params.get("rotate")))


@dataclass(frozen=True)
class UnlockKey:
    """``swarm unlock-key [--rotate]``."""

    rotate: bool

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        return cls(bool(params.get("rotate")))


@dataclass(frozen=True)
class NodeRemove:
    """``node rm [-f] NODE...``."""

    refs: list[str]
    force: bool

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        return cls(refs(params, "nodes", "node"), bool(params.get("force")))


class TaskRefs(_Refs):
    """``inspect TASK...``."""

    KEY, WHAT = "tasks", "task"


class NetworkRefs(_Refs):
    """``network inspect|rm NETWORK...``."""

    KEY, WHAT = "networks", "network"


class SecretRefs(_Refs):
    """``secret inspect|rm SECRET...``."""

    KEY, WHAT = "secrets", "secret"


class ConfigRefs(_Refs):
    """``config inspect|rm CONFIG...``."""

    KEY, WHAT = "configs", "config"


@dataclass(frozen=True)
class NodeUpdate:
    """``node update [--availability] [--label-add KEY[=VALUE]] [--label-rm KEY] NODE``: the
    flags are checked here; that a removed label exists, once the node is found."""

    node: str
    availability: pb.NodeSpec.Availability.ValueType | None
    label_add: list[str]
    label_rm: list[str]

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Self:
        availability = params.get("availability")
        try:
            parsed = None if availability is None else parse_availability(availability)
        except SpecError as exc:
            raise _control_error(str(exc)) from None
        label_add = refs(params, "label_add", "--label-add", required=False)
        label_rm = refs(params, "label_rm", "--label-rm", required=False)
        for label in label_add:
            if not label.partition("=")[0]:
                raise _control_error(f'invalid --label-add "{label}": use KEY=VALUE or KEY')
        return cls(ref(params, "node"), parsed, label_add, label_rm)
