"""Swarm's service templates: ``{{.Service.Name}}``, ``{{.Task.Slot}}``, ``{{.Node.Hostname}}``...

Docker lets ``--hostname``, ``--env`` and ``--mount`` source and target name the task that
runs them, so that one spec gives every replica its own hostname, variable or directory.
SwarmKit expands them on the node, when the agent turns a task into a container: only the node
knows its own ID and hostname. The manager only checks them (``check``) when a service is
created or updated, so an unknown placeholder is refused before anything is stored instead of
reaching every node as literal text.

The language is the part of Go's text/template that these flags use: ``{{.Path}}`` for a
placeholder below, and ``{{index .Service.Labels "KEY"}}`` for one service label. Anything
else is refused with the list of what is valid, rather than half-supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shoal.proto import objects_pb2 as pb

#: Every placeholder docker documents for service templates, in docker's order.
PLACEHOLDERS = (
    "Service.ID",
    "Service.Name",
    "Service.Labels",
    "Node.ID",
    "Node.Hostname",
    "Node.Platform.Architecture",
    "Node.Platform.OS",
    "Task.ID",
    "Task.Name",
    "Task.Slot",
)

_FIELD = re.compile(r"\s*\.([A-Za-z][A-Za-z0-9_.]*)\s*\Z")
_INDEX_LABEL = re.compile(r'\s*index\s+\.Service\.Labels\s+"([^"\\]*)"\s*\Z')


class TemplateError(ValueError):
    """A template that cannot be expanded; the message says what is wrong and what is valid."""


@dataclass(frozen=True)
class TemplateValues:
    """What one task's placeholders stand for on the node that runs it."""

    service_id: str = ""
    service_name: str = ""
    service_labels: dict[str, str] = field(default_factory=dict)
    node_id: str = ""
    node_hostname: str = ""
    node_os: str = ""
    node_arch: str = ""
    task_id: str = ""
    task_name: str = ""
    task_slot: str = ""

    def lookup(self, path: str) -> str:
        values = {
            "Service.ID": self.service_id,
            "Service.Name": self.service_name,
            "Service.Labels": _go_map(self.service_labels),
            "Node.ID": self.node_id,
            "Node.Hostname": self.node_hostname,
            "Node.Platform.Architecture": self.node_arch,
            "Node.Platform.OS": self.node_os,
            "Task.ID": self.task_id,
            "Task.Name": self.task_name,
            "Task.Slot": self.task_slot,
        }
        return values[path]


#: Plausible values for checking, on the manager, that an expanded value would be valid
#: (a hostname label, an absolute path): IDs are 25 lowercase letters and digits as shoal's.
SAMPLE = TemplateValues(
    service_id="a" * 25,
    service_name="service",
    node_id="b" * 25,
    node_hostname="node",
    node_os="linux",
    node_arch="x86_64",
    task_id="c" * 25,
    task_name="service.1." + "c" * 25,
    task_slot="1",
)


def _go_map(labels: dict[str, str]) -> str:
    """How Go prints a map[string]string (keys sorted): ``map[a:1 b:2]``."""
    return "map[" + " ".join(f"{k}:{labels[k]}" for k in sorted(labels)) + "]"


def _valid_list() -> str:
    return ", ".join("{{." + p + "}}" for p in PLACEHOLDERS)


def _parse(text: str) -> list[tuple[str, str]]:
    """The template as (kind, value) parts: ("text", ...), ("field", path), ("label", key)."""
    parts: list[tuple[str, str]] = []
    rest = text
    while True:
        start = rest.find("{{")
        if start < 0:
            parts.append(("text", rest))
            return parts
        parts.append(("text", rest[:start]))
        end = rest.find("}}", start + 2)
        if end < 0:
            raise TemplateError('a "{{" is not closed by "}}"')
        action = rest[start + 2 : end]
        rest = rest[end + 2 :]
        label = _INDEX_LABEL.match(action)
        if label:
            parts.append(("label", label.group(1)))
            continue
        found = _FIELD.match(action)
        if not found:
            raise TemplateError(
                f'unsupported template "{{{{{action}}}}}": use a placeholder such as {{{{.Task.Slot}}}} '
                'or {{index .Service.Labels "KEY"}}'
            )
        path = found.group(1)
        if path not in PLACEHOLDERS:
            raise TemplateError(f'unknown placeholder "{{{{.{path}}}}}": valid ones are {_valid_list()}')
        parts.append(("field", path))


def is_template(text: str) -> bool:
    return "{{" in text


def check(text: str) -> None:
    """Raise TemplateError if ``text`` is not a template this module can expand."""
    _parse(text)


def expand(text: str, values: TemplateValues) -> str:
    """``text`` with every placeholder replaced by its value for one task."""
    if not is_template(text):
        return text
    out = []
    for kind, value in _parse(text):
        if kind == "text":
            out.append(value)
        elif kind == "label":
            out.append(values.service_labels.get(value, ""))
        else:
            out.append(values.lookup(value))
    return "".join(out)


def task_name(task: pb.Task) -> str:
    """Docker's task name: SERVICE.SLOT.TASKID, or SERVICE.NODEID.TASKID for a global task."""
    slot = str(task.slot) if task.slot else task.node_id
    return f"{task.service_annotations.name}.{slot}.{task.id}"


def values_for(task: pb.Task, node_id: str, node: pb.NodeDescription) -> TemplateValues:
    """The placeholders' values for ``task`` on the node described by ``node``. A global task
    has no slot: ``{{.Task.Slot}}`` is then the node's ID, as in SwarmKit."""
    return TemplateValues(
        service_id=task.service_id,
        service_name=task.service_annotations.name,
        service_labels=dict(task.service_annotations.labels),
        node_id=node_id,
        node_hostname=node.hostname,
        node_os=node.platform.os,
        node_arch=node.platform.arch,
        task_id=task.id,
        task_name=task_name(task),
        task_slot=str(task.slot) if task.slot else node_id,
    )


def uses_templates(task: pb.Task) -> bool:
    """Whether any field ``expand_task`` expands holds a placeholder (most tasks: none, and
    their values need not be worked out)."""
    container = task.spec.container
    uses = is_template(container.hostname) or any(is_template(e) for e in container.env)
    return uses or any(is_template(m.source) or is_template(m.target) for m in container.mounts)


def expand_task(task: pb.Task, values: TemplateValues) -> pb.Task:
    """A copy of ``task`` whose hostname, environment and mount sources and targets are
    expanded; ``task`` itself is left as the manager sent it."""
    if not uses_templates(task):
        return task
    expanded = pb.Task()
    expanded.CopyFrom(task)
    spec = expanded.spec.container
    spec.hostname = expand(spec.hostname, values)
    env = [expand(e, values) for e in spec.env]
    del spec.env[:]
    spec.env.extend(env)
    for mount in spec.mounts:
        mount.source = expand(mount.source, values)
        mount.target = expand(mount.target, values)
    return expanded
