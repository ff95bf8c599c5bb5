"""``shoal events``: docker's swarm-scope events, derived from the store's committed changes.

Every manager keeps its own bounded ring of recent events (``EventLog``), fed by a watch on its
store replica: each committed create, update or delete of an object kind docker reports
becomes one message in docker's shape (``Type``, ``Action``, ``Actor.ID``,
``Actor.Attributes``, ``scope``, ``time``, ``timeNano``), with the attributes docker's daemon
adds (``name``; on a node update the ``availability``/``role``/``state``/``leader``/
``reachability`` that changed as ``.old``/``.new``; on a service update the ``image``,
``replicas`` and ``updatestate`` that changed). Kinds are taken generically from the change
(``Event.kind``), so a new object kind in the store (networks) yields events with no change
here; only tasks and the cluster object are left out, as docker leaves them out.

Because every manager applies the same committed entries, any manager can serve the stream,
and a leader change loses nothing on the managers that stay: each one's ring continues. The
ring lives in memory only: a manager that restarts starts with the events of the entries it
replays from its store's log (those after its last snapshot), and a replica brought up to
date by a snapshot does not see the individual changes the snapshot summarised.

Times are docker's: a create's is the object's ``created_at``, an update's its ``updated_at``
(both written by the leader, so every manager reports the same), a removal's the time this
manager applied it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shoal.manager import listfilters
from shoal.manager.controlapi import ControlError, control_params
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode
from shoal.store.memory import CREATE, DELETE, Event, ObjectStore, Watch

#: Events a manager keeps for ``--since`` (docker's daemon keeps 256 of its own).
RING_SIZE = 1000
#: Store kinds docker reports no events for.
SILENT_KINDS = frozenset({"task", "cluster"})
#: docker's event types (``--filter type=``); shoal has the swarm-scope ones.
DOCKER_TYPES = (
    "config",
    "container",
    "daemon",
    "image",
    "network",
    "node",
    "plugin",
    "secret",
    "service",
    "volume",
)
#: Filter keys ``shoal events`` takes, with the values a key is limited to (None: any).
EVENT_KEYS: Mapping[str, tuple[str, ...] | None] = {
    "config": None,
    "event": None,
    "label": None,
    "network": None,
    "node": None,
    "scope": ("swarm", "local"),
    "secret": None,
    "service": None,
    "type": DOCKER_TYPES,
}
#: The filter keys that name an object: they match the actor's ID or name by prefix.
NAME_KEYS = ("config", "network", "node", "secret", "service")
_ACTIONS: dict[int, str] = {CREATE: "create", DELETE: "remove"}


def _lower_enum(enum: Any, value: int) -> str:
    return str(enum.Name(value)).lower()


def _name_of(kind: str, obj: Any) -> str:
    """The actor's ``name``: the spec's name (a node without one: its hostname)."""
    spec = getattr(obj, "spec", None)
    name = spec.annotations.name if spec is not None and spec.HasField("annotations") else ""
    if not name and kind == "node":
        name = obj.description.hostname
    return str(name)


def _changed(attributes: dict[str, str], key: str, old: str, new: str) -> None:
    if old != new:
        attributes[f"{key}.old"] = old
        attributes[f"{key}.new"] = new


def _changed_enum(attributes: dict[str, str], key: str, enum: Any, old: int, new: int) -> None:
    """``_changed`` for an enum field, naming the values only when they differ: every node
    write (a label, a heartbeat's status) passes here, and most change none of them."""
    if old != new:
        _changed(attributes, key, _lower_enum(enum, old), _lower_enum(enum, new))


def _node_changes(node: pb.Node, old: pb.Node, attributes: dict[str, str]) -> None:
    """What docker's daemon adds to a node's update event."""
    _changed_enum(
        attributes, "availability", pb.NodeSpec.Availability, old.spec.availability, node.spec.availability
    )
    _changed_enum(attributes, "role", pb.NodeSpec.Role, old.role, node.role)
    _changed_enum(attributes, "state", pb.NodeStatus.State, old.status.state, node.status.state)
    if node.HasField("manager_status") and old.HasField("manager_status"):
        was, now = old.manager_status, node.manager_status
        _changed(attributes, "leader", str(was.leader).lower(), str(now.leader).lower())
        _changed_enum(
            attributes, "reachability", pb.ManagerStatus.Reachability, was.reachability, now.reachability
        )


def _service_changes(service: pb.Service, old: pb.Service, attributes: dict[str, str]) -> None:
    """What docker's daemon adds to a service's update event."""
    _changed(attributes, "image", old.spec.task.container.image, service.spec.task.container.image)
    if service.spec.WhichOneof("mode") == "replicated" and old.spec.WhichOneof("mode") == "replicated":
        _changed(
            attributes,
            "replicas",
            str(old.spec.replicated.replicas),
            str(service.spec.replicated.replicas),
        )
    if service.HasField("update_status"):
        states = pb.UpdateStatus.UpdateState
        new_state = _lower_enum(states, service.update_status.state)
        if not old.HasField("update_status"):
            attributes["updatestate.new"] = new_state
        else:
            _changed(attributes, "updatestate", _lower_enum(states, old.update_status.state), new_state)


def message_of(change: Event, now: float) -> dict[str, Any] | None:
    """docker's ``events.Message`` for one committed store change (None: docker reports none)."""
    if change.kind in SILENT_KINDS:
        return None
    action = _ACTIONS.get(change.action, "update")
    obj = change.obj
    attributes = {"name": _name_of(change.kind, obj)}
    if action == "update" and change.old is not None:
        if change.kind == "node":
            _node_changes(obj, change.old, attributes)
        elif change.kind == "service":
            _service_changes(obj, change.old, attributes)
    meta = getattr(obj, "meta", None)
    when = now
    if meta is not None and action != "remove":
        when = (meta.created_at if action == "create" else meta.updated_at) or now
    nanos = round(when * 1_000_000) * 1000  # a double holds epoch seconds to a microsecond
    return {
        "Type": change.kind,
        "Action": action,
        "Actor": {"ID": obj.id, "Attributes": attributes},
        "scope": "swarm",
        "time": nanos // 1_000_000_000,
        "timeNano": nanos,
    }


# ---------------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class EventQuery:
    """What a client asked for: events from ``since`` (None: only new ones) to ``until``
    (None: for ever), matching ``filters`` (docker's rules)."""

    since: float | None
    until: float | None
    filters: listfilters.Filters


def _time_param(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ControlError(
            StatusCode.INVALID_ARGUMENT, f'invalid {key} "{value}": give seconds since the epoch'
        )
    return seconds


def parse_query(params: Mapping[str, Any]) -> EventQuery:
    """The ``events`` call's parameters, checked (one-line ``INVALID_ARGUMENT`` otherwise)."""
    try:
        filters = listfilters.parse(params.get("filters"), EVENT_KEYS, "events")
    except listfilters.FilterError as exc:
        raise ControlError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
    since, until = _time_param(params, "since"), _time_param(params, "until")
    if since is not None and until is not None and until < since:
        raise ControlError(StatusCode.INVALID_ARGUMENT, "invalid --until: it is before --since")
    return EventQuery(since=since, until=until, filters=filters)


def _fuzzy(values: list[str] | None, *candidates: str) -> bool:
    """docker's ``FuzzyMatch``: no values pass; else a candidate equal to or starting with one."""
    if not values:
        return True
    return any(c and c.startswith(v) for c in candidates for v in values)


def _exact(values: list[str] | None, candidate: str) -> bool:
    return not values or candidate in values


def _labels(values: list[str] | None, attributes: Mapping[str, str]) -> bool:
    """docker's ``MatchKVList``: every ``KEY`` or ``KEY=VALUE`` must be in the attributes."""
    for item in values or ():
        key, sep, value = item.partition("=")
        if key not in attributes or (sep and attributes[key] != value):
            return False
    return True


def matches(message: Mapping[str, Any], filters: listfilters.Filters) -> bool:
    """docker's ``events.Filter.Include`` for swarm-scope messages: keys AND, values OR."""
    actor = message["Actor"]
    name = actor["Attributes"].get("name", "")
    return (
        _exact(filters.get("event"), message["Action"])
        and _exact(filters.get("type"), message["Type"])
        and _exact(filters.get("scope"), message["scope"])
        and all(_fuzzy(filters.get(key), actor["ID"], name) for key in NAME_KEYS)
        and _labels(filters.get("label"), actor["Attributes"])
    )


def _in_window(message: Mapping[str, Any], since: float | None, until: float | None) -> bool:
    seconds = message["timeNano"] / 1e9
    return (since is None or seconds >= since) and (until is None or seconds <= until)


# ---------------------------------------------------------------------------------- the ring


class EventLog:
    """A manager's ring of recent events, and the streams that follow it."""

    def __init__(
        self, store: ObjectStore, size: int = RING_SIZE, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._clock = clock
        #: (sequence number, message), oldest first.
        self._ring: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=size)
        self._seq = 0
        self._grew = asyncio.Condition()
        self._watch: Watch | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin recording (before the store replays its log, so replayed entries count)."""
        self._watch = self._store.watch(where=lambda change: change.kind not in SILENT_KINDS)
        self._task = asyncio.get_running_loop().create_task(self._record_all(), name="events-ring")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._watch is not None:
            self._watch.close()

    async def _record_all(self) -> None:
        assert self._watch is not None
        while True:
            changes = [await self._watch.get(), *self._watch.drain()]
            for change in changes:
                self.record(change)
            async with self._grew:
                self._grew.notify_all()

    def record(self, change: Event) -> None:
        message = message_of(change, self._clock())
        if message is not None:
            self._seq += 1
            self._ring.append((self._seq, message))

    def recent(self) -> list[dict[str, Any]]:
        """The ring's messages, oldest first."""
        return [message for _, message in self._ring]

    async def follow(self, query: EventQuery) -> AsyncIterator[dict[str, Any]]:
        """The ring's events since ``query.since`` (none without it), then new ones as they
        come, until ``query.until`` (for ever without it), each matching the filters."""
        last = 0 if query.since is not None else self._seq
        while True:
            fresh = [(seq, message) for seq, message in list(self._ring) if seq > last]
            if not fresh:
                if query.until is not None and self._clock() >= query.until:
                    return
                await self._wait_past(last, None if query.until is None else query.until - self._clock())
                continue
            last = fresh[-1][0]
            for _, message in fresh:
                if _in_window(message, query.since, query.until) and matches(message, query.filters):
                    yield message

    async def _wait_past(self, seq: int, timeout: float | None) -> None:  # noqa: ASYNC109
        """Until an event after ``seq`` is recorded, or ``timeout`` seconds passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if timeout is None else max(0.0, timeout)), self._grew:
                await self._grew.wait_for(lambda: self._seq > seq)


def events_stream(
    events: Callable[[], EventLog],
) -> Callable[[bytes, PeerIdentity | None], AsyncIterator[bytes]]:
    """The ``rpc.EVENTS`` handler: a ``ControlRequest`` carrying the ``events`` call's JSON
    parameters; one ``ControlResponse`` per event, its JSON the docker message."""

    async def handler(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        try:
            query = parse_query(control_params(rpb.ControlRequest.FromString(request).json_body))
        except ControlError as exc:
            raise RPCError(exc.code, exc.message) from None
        async for message in events().follow(query):
            yield rpb.ControlResponse(json_body=json.dumps(message).encode()).SerializeToString()

    return handler
