"""How ``service logs`` prints a line: docker's layout, built from the IDs and names the daemon
sends with each line, so every flag (``--raw``, ``--no-task-ids``, ``--no-trunc``,
``--no-resolve``, ``--timestamps``, ``--details``) is a choice made here, on the client.

docker's layout: ``[TIMESTAMP ]SERVICE.SLOT.TASKID@NODE    | [DETAILS ]LINE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.logtime import rfc3339_nano

#: docker's short IDs.
SHORT_ID = 12


@dataclass(frozen=True)
class LogFormat:
    """The ``service logs`` flags that shape a printed line."""

    raw: bool = False
    no_task_ids: bool = False
    no_trunc: bool = False
    no_resolve: bool = False
    timestamps: bool = False
    details: bool = False


def task_prefix(item: dict[str, Any], fmt: LogFormat) -> str:
    """``SERVICE.SLOT.TASKID@NODE``; names become IDs with ``--no-resolve``, the task ID is
    whole with ``--no-trunc`` and gone with ``--no-task-ids``."""
    if "TaskID" not in item:  # a daemon from before these fields: its prefix as it is
        return str(item.get("Prefix", ""))
    service = item["ServiceID"] if fmt.no_resolve else item["ServiceName"]
    node = item["NodeID"] if fmt.no_resolve else item["NodeName"]
    name = f"{service}.{item['Slot']}"
    if not fmt.no_task_ids:
        task_id = str(item["TaskID"])
        name += "." + (task_id if fmt.no_trunc else task_id[:SHORT_ID])
    return f"{name}@{node}"


def details(item: dict[str, Any]) -> str:
    """docker's ``--details`` attributes of a swarm task's line, sorted and comma-separated."""
    return (
        f"com.docker.swarm.node.id={item.get('NodeID', '')},"
        f"com.docker.swarm.service.id={item.get('ServiceID', '')},"
        f"com.docker.swarm.task.id={item.get('TaskID', '')}"
    )


def format_line(item: dict[str, Any], fmt: LogFormat) -> str:
    """One printed line of a ``service.logs`` item (warnings are printed elsewhere)."""
    line = str(item.get("Line", ""))
    if fmt.details:
        line = f"{details(item)} {line}"
    if not fmt.raw:
        line = f"{task_prefix(item, fmt)}    | {line}"
    if fmt.timestamps:
        line = f"{rfc3339_nano(float(item.get('Timestamp') or 0.0))} {line}"
    return line
