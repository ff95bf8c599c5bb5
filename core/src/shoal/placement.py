"""Placement rules every scheduler shares: constraints, preferences and the node filter pipeline.

This module is public API for scheduler plugins. A scheduler decides *which* of the eligible
nodes a task goes to; *whether* a node is eligible is decided here, the same way for every
scheduler, so that swapping the scheduler never changes what ``--constraint`` or
``--reserve-memory`` mean. It follows Docker Swarm (swarmkit ``manager/scheduler``):

* :func:`parse_constraint` reads ``--constraint`` expressions (``node.labels.zone==eu``);
  the control API calls it to reject a bad service spec before anything is stored.
* :func:`parse_preference` reads ``--placement-pref`` expressions (``spread=node.labels.zone``).
* :class:`Pipeline` runs the filters in Swarm's fixed order (ready, resources, constraints,
  host ports, max replicas, then extension filters) and explains failures in Swarm's words.
* :class:`Filter` is the base class for extra filters; extensions contribute instances through
  the ``shoal_node_filters`` hook and the scheduler driver hands them to the scheduler as the
  ``filters`` argument of ``schedule``, which passes them to ``Pipeline(filters)``.
* :func:`build_node_infos` turns the store's nodes and tasks into the ``NodeInfo`` objects a
  scheduler receives; :func:`group_batches` splits tasks into Swarm's (service, spec version)
  batches.

Typical use inside a scheduler::

    pipeline = Pipeline(filters).set_task(tasks[0])   # once per batch: parses constraints once
    eligible = [info for info in nodes if pipeline.process(info)]
    ...                                        # choose, then info.add_task(task)
    if not pipeline.recheck(info): ...         # the node filled up (resources, ports, ...)
    reason = pipeline.explain()                # "insufficient resources on 3 nodes; ..."
"""

from __future__ import annotations

import ipaddress
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from shoal.proto import objects_pb2 as pb
from shoal.roles.scheduler import NodeInfo

__all__ = [
    "CONSTRAINT_KEYS",
    "Constraint",
    "ConstraintFilter",
    "Filter",
    "HostPortFilter",
    "MaxReplicasFilter",
    "Pipeline",
    "Preference",
    "ReadyFilter",
    "ResourceFilter",
    "batch_key",
    "build_node_infos",
    "check_filters",
    "group_batches",
    "parse_constraint",
    "parse_constraints",
    "parse_preference",
]

# --------------------------------------------------------------------------- constraints

#: The keys a constraint may use, as shown in error messages.
CONSTRAINT_KEYS: tuple[str, ...] = (
    "node.id",
    "node.hostname",
    "node.ip",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
    "node.labels.<key>",
    "engine.labels.<key>",
)

_OPERATORS = ("==", "!=")
# swarmkit manager/constraint: keys are identifiers, values avoid characters that are (or may
# become) operators such as < > ~.
_KEY_PATTERN = re.compile(r"^[a-z_][a-z0-9\-_.]+$", re.IGNORECASE)
_VALUE_PATTERN = re.compile(r"^[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$", re.IGNORECASE)
_NODE_LABELS = "node.labels."
_ENGINE_LABELS = "engine.labels."


def _node_id(node: pb.Node) -> str:
    return node.id


def _hostname(node: pb.Node) -> str:
    return node.description.hostname


def _addr(node: pb.Node) -> str:
    return node.status.addr


def _role(node: pb.Node) -> str:
    return "manager" if node.role == pb.NodeSpec.MANAGER else "worker"


def _os(node: pb.Node) -> str:
    return node.description.platform.os


def _arch(node: pb.Node) -> str:
    return node.description.platform.arch


_FIXED_KEYS: dict[str, Callable[[pb.Node], str]] = {
    "node.id": _node_id,
    "node.hostname": _hostname,
    "node.ip": _addr,
    "node.role": _role,
    "node.platform.os": _os,
    "node.platform.arch": _arch,
}


def _node_label(name: str) -> Callable[[pb.Node], str]:
    def get(node: pb.Node) -> str:
        return node.spec.annotations.labels.get(name, "")

    return get


def _engine_label(name: str) -> Callable[[pb.Node], str]:
    def get(node: pb.Node) -> str:
        return node.description.engine.labels.get(name, "")

    return get


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Constraint:
    """One parsed ``key==value`` or ``key!=value`` placement constraint.

    Build it with :func:`parse_constraint`. Values compare case-insensitively and a label the
    node does not have counts as ``""`` (so ``node.labels.zone!=eu`` matches unlabelled
    nodes), as in Swarm. ``node.ip`` takes an address or a CIDR network.
    """

    key: str
    operator: str
    value: str
    _get: Callable[[pb.Node], str] = field(repr=False, compare=False)
    _expected: str = field(repr=False, compare=False)
    _network: IPNetwork | None = field(default=None, repr=False, compare=False)

    def matches(self, node: pb.Node) -> bool:
        """Whether ``node`` satisfies this constraint."""
        actual = self._get(node)
        if self._network is not None:
            equal = _in_network(actual, self._network)
        else:
            equal = actual.casefold() == self._expected
        return equal if self.operator == "==" else not equal

    def __str__(self) -> str:
        return f"{self.key}{self.operator}{self.value}"


def _in_network(addr: str, network: IPNetwork) -> bool:
    host = addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr  # tolerate "ip:port"
    try:
        return ipaddress.ip_address(host.strip("[]")) in network
    except ValueError:
        return False


def parse_constraint(expr: str) -> Constraint:
    """Parse one constraint expression such as ``node.labels.zone==eu``.

    :raises ValueError: with a one-line message naming the expression and what is wrong,
        e.g. ``invalid constraint "node.rol==x": unknown key "node.rol" (use node.id, ...)``.
    """
    for operator in _OPERATORS:
        if operator in expr:
            raw_key, raw_value = expr.split(operator, 1)
            break
    else:
        raise ValueError(f'invalid constraint "{expr}": expected one operator from ==, !=')
    key, value = raw_key.strip(), raw_value.strip()

    def bad(why: str) -> ValueError:
        return ValueError(f'invalid constraint "{expr}": {why}')

    if not _KEY_PATTERN.match(key):
        raise bad(f'key "{key}" is invalid')
    if not _VALUE_PATTERN.match(value):
        raise bad(
            f'value "{value}" is invalid (use letters, digits, spaces and : - _ . * ( ) ? + [ ] \\ ^ $ | /)'
        )
    lowered = key.lower()
    network: IPNetwork | None = None
    if lowered in _FIXED_KEYS:
        key, get = lowered, _FIXED_KEYS[lowered]
        if key == "node.role" and value.lower() not in ("manager", "worker"):
            raise bad(f'node.role must be manager or worker, not "{value}"')
        if key == "node.ip":
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise bad(f'node.ip needs an IP address or CIDR network, not "{value}"') from None
    elif lowered.startswith(_NODE_LABELS) or lowered.startswith(_ENGINE_LABELS):
        prefix = _NODE_LABELS if lowered.startswith(_NODE_LABELS) else _ENGINE_LABELS
        name = key[len(prefix) :]
        if not name:
            raise bad(f'key "{key}" names no label (use {prefix}<key>)')
        key = prefix + name
        get = _node_label(name) if prefix == _NODE_LABELS else _engine_label(name)
    else:
        raise bad(f'unknown key "{key}" (use {", ".join(CONSTRAINT_KEYS)})')
    return Constraint(key, operator, value, get, value.casefold(), network)


def parse_constraints(exprs: Iterable[str]) -> list[Constraint]:
    """Parse every expression (all must hold for a node to match); raises like ``parse_constraint``."""
    return [parse_constraint(expr) for expr in exprs]


# --------------------------------------------------------------------------- preferences


@dataclass(frozen=True, slots=True)
class Preference:
    """A parsed ``spread=node.labels.<k>`` (or ``engine.labels.<k>``) placement preference.

    Tasks are spread evenly over the distinct values of the label; nodes without the label
    form their own group (value ``""``), as in Swarm.
    """

    descriptor: str
    _get: Callable[[pb.Node], str] = field(repr=False, compare=False)

    def value(self, node: pb.Node) -> str:
        """The group ``node`` belongs to for this preference."""
        return self._get(node)

    def __str__(self) -> str:
        return f"spread={self.descriptor}"


def parse_preference(expr: str) -> Preference:
    """Parse ``spread=node.labels.<key>`` or ``spread=engine.labels.<key>``.

    :raises ValueError: with a one-line message naming the expression and what is wrong.
    """
    strategy, sep, descriptor = expr.partition("=")
    if not sep or strategy.strip().lower() != "spread":
        raise ValueError(f'invalid placement preference "{expr}": only spread=<label> is supported')
    descriptor = descriptor.strip()
    lowered = descriptor.lower()
    for prefix, make in ((_NODE_LABELS, _node_label), (_ENGINE_LABELS, _engine_label)):
        if lowered.startswith(prefix) and len(descriptor) > len(prefix):
            name = descriptor[len(prefix) :]
            return Preference(prefix + name, make(name))
    raise ValueError(
        f'invalid placement preference "{expr}": spread needs node.labels.<key> or engine.labels.<key>'
    )


# --------------------------------------------------------------------------- filters


def _nodes(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


class Filter(ABC):
    """One eligibility rule in the pipeline.

    Subclass it to add a rule (return instances from the ``shoal_node_filters`` hook). The
    pipeline calls ``set_task`` once per batch of identical tasks; a filter that returns
    ``False`` there is skipped for the batch (nothing to check). ``check`` then runs for each
    node and must be cheap and side-effect free. Set ``static = True`` when ``check`` looks only
    at ``info.node`` (not at counters or resources that ``NodeInfo.add_task`` changes): the
    scheduler then does not re-run it after each placement.
    """

    #: Whether ``check`` depends only on the node object, not on what is placed on it.
    static: ClassVar[bool] = False

    def set_task(self, task: pb.Task) -> bool:
        """Prepare for tasks like ``task``; return whether this filter applies to them."""
        return True

    @abstractmethod
    def check(self, info: NodeInfo) -> bool:
        """Whether the task may go to ``info``'s node."""

    @abstractmethod
    def explain(self, nodes: int) -> str:
        """Why ``nodes`` nodes were rejected, e.g. ``"insufficient resources on 3 nodes"``."""


class ReadyFilter(Filter):
    """The node is up (status READY) and takes new work (availability ACTIVE)."""

    static = True

    def check(self, info: NodeInfo) -> bool:
        node = info.node
        return node.status.state == pb.NodeStatus.READY and node.spec.availability == pb.NodeSpec.ACTIVE

    def explain(self, nodes: int) -> str:
        return f"{_nodes(nodes)} not available for new tasks"


class ResourceFilter(Filter):
    """The task's CPU, memory and generic resource (``gpu=1``) reservations fit in what the
    node has left."""

    def __init__(self) -> None:
        self._cpus = 0
        self._memory = 0
        self._generic: list[tuple[str, int]] = []

    def set_task(self, task: pb.Task) -> bool:
        reservations = task.spec.resources.reservations
        self._cpus, self._memory = reservations.nano_cpus, reservations.memory_bytes
        self._generic = [(g.kind, g.value) for g in reservations.generic]
        return bool(self._cpus or self._memory or self._generic)

    def check(self, info: NodeInfo) -> bool:
        return (
            self._cpus <= info.available_nano_cpus
            and self._memory <= info.available_memory_bytes
            and all(value <= info.available_generic.get(kind, 0) for kind, value in self._generic)
        )

    def explain(self, nodes: int) -> str:
        return f"insufficient resources on {_nodes(nodes)}"


class ConstraintFilter(Filter):
    """Every ``--constraint`` of the task holds on the node.

    Constraints are parsed once per batch. A spec that slipped past validation with an
    unparseable constraint matches no node (the task stays pending, explained) rather than
    crashing the scheduler.
    """

    static = True

    def __init__(self) -> None:
        self._constraints: list[Constraint] = []
        self._invalid = False

    def set_task(self, task: pb.Task) -> bool:
        exprs = task.spec.placement.constraints
        self._invalid = False
        try:
            self._constraints = parse_constraints(exprs)
        except ValueError:
            self._constraints, self._invalid = [], True
        return bool(exprs)

    def check(self, info: NodeInfo) -> bool:
        if self._invalid:
            return False
        node = info.node
        return all(constraint.matches(node) for constraint in self._constraints)

    def explain(self, nodes: int) -> str:
        return f"scheduling constraints not satisfied on {_nodes(nodes)}"


class HostPortFilter(Filter):
    """No port the task publishes in host mode is already bound on the node."""

    def __init__(self) -> None:
        self._ports: list[tuple[int, int]] = []

    def set_task(self, task: pb.Task) -> bool:
        self._ports = [
            (port.protocol, port.published_port)
            for port in task.endpoint.ports
            if port.publish_mode == pb.PortConfig.HOST and port.published_port
        ]
        return bool(self._ports)

    def check(self, info: NodeInfo) -> bool:
        used = info.used_host_ports
        return not any(port in used for port in self._ports)

    def explain(self, nodes: int) -> str:
        return f"host-mode port already in use on {_nodes(nodes)}"


class MaxReplicasFilter(Filter):
    """The node holds fewer than ``--replicas-max-per-node`` tasks of the service."""

    def __init__(self) -> None:
        self._service = ""
        self._max = 0

    def set_task(self, task: pb.Task) -> bool:
        self._service, self._max = task.service_id, task.spec.placement.max_replicas
        return self._max > 0

    def check(self, info: NodeInfo) -> bool:
        return info.tasks_by_service.get(self._service, 0) < self._max

    def explain(self, nodes: int) -> str:
        return "max replicas per node limit exceed"


def check_filters(filters: Iterable[object]) -> tuple[Filter, ...]:
    """The filters extensions returned from ``shoal_node_filters``, checked to be ``Filter``s.

    The scheduler driver calls this once when it starts on the leader, so that a plugin
    returning something else fails there, not in the middle of a scheduling tick.
    """
    checked: list[Filter] = []
    for item in filters:
        if not isinstance(item, Filter):
            raise TypeError(f"node filter {item!r} is not a shoal.placement.Filter")
        checked.append(item)
    return tuple(checked)


class Pipeline:
    """Swarm's node filter pipeline for one batch of identical tasks.

    Filters run in a fixed order (ready, resources, constraints, host ports, max replicas,
    then ``extra_filters``); the first that rejects a node gets the blame, and ``explain``
    reports the counts, most frequent first. A scheduler passes the ``filters`` argument
    of ``SchedulerProvider.schedule`` as ``extra_filters``.
    """

    def __init__(self, extra_filters: Iterable[Filter] = ()) -> None:
        extras = tuple(extra_filters)
        self._filters: list[Filter] = [
            ReadyFilter(),
            ResourceFilter(),
            ConstraintFilter(),
            HostPortFilter(),
            MaxReplicasFilter(),
            *extras,
        ]
        self._checks: list[Callable[[NodeInfo], bool]] = []
        self._active: list[Filter] = []
        self._dynamic: list[Callable[[NodeInfo], bool]] = []
        self._failures: list[int] = []

    def set_task(self, task: pb.Task) -> Pipeline:
        """Configure every filter for ``task`` (and tasks of the same spec); resets counts."""
        self._active = [f for f in self._filters if f.set_task(task)]
        self._checks = [f.check for f in self._active]
        self._dynamic = [f.check for f in self._active if not f.static]
        self._failures = [0] * len(self._active)
        return self

    def process(self, info: NodeInfo) -> bool:
        """Whether the node passes every filter; a failure is counted against the first one that rejects."""
        for index, check in enumerate(self._checks):
            if not check(info):
                self._failures[index] += 1
                return False
        return True

    def recheck(self, info: NodeInfo) -> bool:
        """After ``add_task`` on a node that passed: does it still pass? (not counted)

        Only filters whose answer can change with what is placed on the node run, so a
        scheduler can call this after every placement cheaply.
        """
        for check in self._dynamic:  # a plain loop: this runs once per placed task
            if not check(info):
                return False
        return True

    def explain(self) -> str:
        """Why nodes were rejected since ``set_task``: ``"a on N nodes; b on M nodes"``, most first."""
        counted = [(count, index) for index, count in enumerate(self._failures) if count]
        counted.sort(key=lambda item: (-item[0], item[1]))
        return "; ".join(self._active[index].explain(count) for count, index in counted)

    def failures(self) -> dict[str, int]:
        """Rejections per filter class name since ``set_task`` (for tests and debugging)."""
        return {type(f).__name__: n for f, n in zip(self._active, self._failures, strict=True) if n}


# --------------------------------------------------------------------------- node infos


def _occupies_node(task: pb.Task) -> bool:
    """A task counts against its node while it should run and has not ended (Swarm's rule)."""
    return task.desired_state <= pb.RUNNING and task.status.state <= pb.RUNNING


def build_node_infos(nodes: Iterable[pb.Node], tasks: Iterable[pb.Task]) -> dict[str, NodeInfo]:
    """One ``NodeInfo`` per node, keyed by node ID, with the tasks that occupy it accounted.

    A task occupies its node while desired state <= RUNNING and observed state <= RUNNING
    (assigned but not yet running counts, as in Swarm). Available resources start from the
    node's described resources; tasks on unknown nodes are ignored.
    """
    infos: dict[str, NodeInfo] = {}
    for node in nodes:
        resources = node.description.resources
        infos[node.id] = NodeInfo(
            node=node,
            available_nano_cpus=resources.nano_cpus,
            available_memory_bytes=resources.memory_bytes,
            available_generic={g.kind: g.value for g in resources.generic},
        )
    for task in tasks:
        info = infos.get(task.node_id) if task.node_id else None
        if info is not None and _occupies_node(task):
            info.add_task(task)
    return infos


def batch_key(task: pb.Task) -> tuple[str, int, bytes]:
    """The key Swarm batches pending tasks by: (service, spec version).

    Tasks without a spec version are only batched with tasks of an identical spec.
    """
    if task.spec_version:
        return (task.service_id, task.spec_version, b"")
    return (task.service_id, 0, task.spec.SerializeToString(deterministic=True) + b"|" + _ports_key(task))


def _ports_key(task: pb.Task) -> bytes:
    return task.endpoint.SerializeToString(deterministic=True)


def group_batches(tasks: Sequence[pb.Task]) -> list[list[pb.Task]]:
    """Split ``tasks`` into batches of one service and spec version, in first-seen order.

    The driver already batches this way; schedulers call it so a mixed list is still handled.
    """
    if not tasks:
        return []
    first = tasks[0]
    service, version = first.service_id, first.spec_version
    if version and all(t.spec_version == version and t.service_id == service for t in tasks):
        return [list(tasks)]  # the usual case: the driver already batched them
    groups: dict[tuple[str, int, bytes], list[pb.Task]] = {}
    for task in tasks:
        groups.setdefault(batch_key(task), []).append(task)
    return list(groups.values())
