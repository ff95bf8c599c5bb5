"""``service inspect --pretty`` and ``node inspect --pretty``: docker's human blocks.

Line for line what docker's ``serviceInspectPrettyTemplate`` and ``nodeInspectPrettyTemplate``
print (tabs included: docker writes them as they are), read from the Docker-shaped dicts of
``shoal.dockershapes`` so the two views can never disagree.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from shoal.cli.output import human_duration
from shoal.dockershapes import NANOS, ZERO_TIME

JSON = dict[str, Any]


def go_duration(nanos: int) -> str:
    """Go's ``time.Duration.String``: ``5s``, ``1m30s``, ``500ms``, ``1h0m0s``."""
    if nanos == 0:
        return "0s"
    sign, nanos = ("-", -nanos) if nanos < 0 else ("", nanos)
    if nanos < NANOS:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return sign + _trim(nanos / size) + unit
    seconds = nanos / NANOS
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = _trim(round(seconds, 9)) + "s"
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{sign}{int(minutes)}m{text}"
    return sign + text


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def bytes_size(size: float) -> str:
    """docker's ``units.BytesSize``: binary units, four significant digits (``1.944GiB``)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
    index = 0
    while size >= 1024 and index < len(units) - 1:
        size /= 1024
        index += 1
    return f"{size:.4g}{units[index]}"


def _float(value: float) -> str:
    """Go's ``%v`` of a float64 (``0.5``, ``2``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _since(stamp: str) -> str:
    when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return human_duration(time.time() - when) + " ago"


def _capital(text: str) -> str:
    """docker's ``formatter.PrettyPrint``: the first letter in upper case."""
    return text[:1].upper() + text[1:]


def go_time(stamp: str) -> str:
    """An RFC 3339 time as Go's ``time.Time.String`` (``2026-12-06 17:47:09.5 +0000 UTC``)."""
    if stamp == ZERO_TIME:
        return "0001-01-01 00:00:00 +0000 UTC"
    return stamp.replace("T", " ").removesuffix("Z") + " +0000 UTC"


def _update_config(lines: list[str], config: JSON, order_label: str) -> None:
    lines.append(f" Parallelism:\t{config['Parallelism']}")
    if config.get("Delay", 0) > 0:
        lines.append(f" Delay:\t\t{go_duration(config['Delay'])}")
    lines.append(f" On failure:\t{config['FailureAction']}")
    if config.get("Monitor", 0) > 0:
        lines.append(f" Monitoring Period: {go_duration(config['Monitor'])}")
    lines.append(f" Max failure ratio: {_float(config['MaxFailureRatio'])}")
    lines.append(f" {order_label}:{' ' * (18 - len(order_label))}{config['Order']}")


def _resources(lines: list[str], resources: JSON) -> None:
    reservations, limits = resources.get("Reservations", {}), resources.get("Limits", {})
    if not (reservations or limits):
        return
    lines.append("Resources:")
    for title, values in ((" Reservations:", reservations), (" Limits:", limits)):
        if not values:
            continue
        lines.append(title)
        if values.get("NanoCPUs", 0) > 0:
            lines.append(f"  CPU:\t\t{_float(values['NanoCPUs'] / NANOS)}")
        if values.get("MemoryBytes"):
            lines.append(f"  Memory:\t{bytes_size(values['MemoryBytes'])}")


def service_pretty(service: JSON) -> str:
    """docker's ``serviceInspectPrettyTemplate`` over one service."""
    spec = service["Spec"]
    task, container = spec["TaskTemplate"], spec["TaskTemplate"]["ContainerSpec"]
    lines = ["", f"ID:\t\t{service['ID']}", f"Name:\t\t{spec['Name']}"]
    if spec.get("Labels"):
        lines.append("Labels:")
        lines += [f" {k}" + (f"={v}" if v else "") for k, v in spec["Labels"].items()]
    if "Global" in spec["Mode"]:
        lines.append("Service Mode:\tGlobal")
    elif "GlobalJob" in spec["Mode"]:
        lines.append("Service Mode:\tGlobal Job")
    elif "ReplicatedJob" in spec["Mode"]:
        job = spec["Mode"]["ReplicatedJob"]
        lines.append("Service Mode:\tReplicated Job")
        lines.append(f" Max Concurrent:\t{job['MaxConcurrent']}")
        lines.append(f" Total Completions:\t{job['TotalCompletions']}")
    else:
        lines.append("Service Mode:\tReplicated")
        lines.append(f" Replicas:\t{spec['Mode']['Replicated']['Replicas']}")
    status = service.get("UpdateStatus")
    if status and status.get("State"):
        lines.append("UpdateStatus:")
        lines.append(f" State:\t\t{status['State']}")
        if status.get("StartedAt"):
            lines.append(f" Started:\t{_since(status['StartedAt'])}")
        if status["State"] == "completed" and status.get("CompletedAt"):
            lines.append(f" Completed:\t{_since(status['CompletedAt'])}")
        lines.append(f" Message:\t{status.get('Message', '')}")
    placement = task.get("Placement", {})
    lines.append("Placement:")
    if placement.get("Constraints"):
        lines.append(f" Constraints:\t[{' '.join(placement['Constraints'])}]")
    if placement.get("Preferences"):
        spread = " ".join("spread=" + p["Spread"]["SpreadDescriptor"] for p in placement["Preferences"])
        lines.append(f" Preferences:   [{spread}]")
    if placement.get("MaxReplicas"):
        lines.append(f" Max Replicas Per Node:   {placement['MaxReplicas']}")
    lines.append("UpdateConfig:")
    _update_config(lines, spec["UpdateConfig"], "Update order")
    lines.append("RollbackConfig:")
    _update_config(lines, spec["RollbackConfig"], "Rollback order")
    lines.append("ContainerSpec:")
    lines.append(f" Image:\t\t{container['Image']}")
    if container.get("Args"):
        lines.append(" Args:\t\t" + "".join(f"{a} " for a in container["Args"]))
    if container.get("Env"):
        lines.append(" Env:\t\t" + "".join(f"{e} " for e in container["Env"]))
    if container.get("Dir"):
        lines.append(f" Dir:\t\t{container['Dir']}")
    if container.get("User"):
        lines.append(f" User: {container['User']}")
    if container.get("Mounts"):
        lines.append("Mounts:")
        for mount in container["Mounts"]:
            lines += [
                f" Target:\t{mount['Target']}",
                f"  Source:\t{mount.get('Source', '')}",
                f"  ReadOnly:\t{'true' if mount.get('ReadOnly') else 'false'}",
                f"  Type:\t\t{mount['Type']}",
            ]
    for key, title, source in (("Configs", "Configs:", "ConfigName"), ("Secrets", "Secrets:", "SecretName")):
        if container.get(key):
            lines.append(title)
            for ref in container[key]:
                lines += [f" Target:\t{ref['File']['Name']}", f"  Source:\t{ref[source]}"]
    _resources(lines, task.get("Resources", {}))
    endpoint = spec.get("EndpointSpec", {})
    lines.append(f"Endpoint Mode:\t{endpoint.get('Mode', 'vip')}")
    ports = service.get("Endpoint", {}).get("Ports") or endpoint.get("Ports") or []
    if ports:
        lines.append("Ports:")
        for port in ports:
            lines += [
                f" PublishedPort = {port.get('PublishedPort', 0)}",
                f"  Protocol = {port['Protocol']}",
                f"  TargetPort = {port['TargetPort']}",
                f"  PublishMode = {port['PublishMode']}",
            ]
        lines[-1] += " "
    health = container.get("Healthcheck")
    if health:
        lines += [
            " Healthcheck:",
            f"  Interval = {go_duration(health.get('Interval', 0))}",
            f"  Retries = {health.get('Retries', 0)}",
            f"  StartPeriod =\t{go_duration(health.get('StartPeriod', 0))}",
            f"  Timeout =\t{go_duration(health.get('Timeout', 0))}",
        ]
        if health.get("Test"):
            lines.append("  Tests:")
            lines += [f"\t Test = {test}" for test in health["Test"]]
    return "\n".join(lines) + "\n"


def node_pretty(node: JSON) -> str:
    """docker's ``nodeInspectPrettyTemplate`` over one node."""
    spec, description, status = node["Spec"], node["Description"], node["Status"]
    lines = [f"ID:\t\t\t{node['ID']}"]
    if spec.get("Name"):
        lines.append(f"Name:\t\t\t{spec['Name']}")
    if spec.get("Labels"):
        lines.append("Labels:")
        lines += [f" - {k}" + (f"={v}" if v else "") for k, v in spec["Labels"].items()]
    lines += [
        f"Hostname:              \t{description['Hostname']}",
        f"Joined at:             \t{go_time(node['CreatedAt'])}",
        "Status:",
        f" State:\t\t\t{_capital(status['State'])}",
    ]
    if status.get("Message"):
        lines.append(f" Message:              \t{_capital(status['Message'])}")
    lines.append(f" Availability:         \t{_capital(spec['Availability'])}")
    if status.get("Addr"):
        lines.append(f" Address:\t\t{status['Addr']}")
    manager = node.get("ManagerStatus")
    if manager is not None:
        lines += [
            "Manager Status:",
            f" Address:\t\t{manager['Addr']}",
            f" Raft Status:\t\t{_capital(manager['Reachability'])}",
            f" Leader:\t\t{'Yes' if manager.get('Leader') else 'No'}",
        ]
    resources = description["Resources"]
    lines += [
        "Platform:",
        f" Operating System:\t{description['Platform']['OS']}",
        f" Architecture:\t\t{description['Platform']['Architecture']}",
        "Resources:",
        f" CPUs:\t\t\t{int(resources['NanoCPUs'] // NANOS)}",
        f" Memory:\t\t{bytes_size(resources['MemoryBytes']) if resources['MemoryBytes'] else ''}",
        f"Engine Version:\t\t{description['Engine']['EngineVersion']}",
    ]
    engine_labels = description["Engine"].get("Labels")
    if engine_labels:
        lines.append("Engine Labels:")
        lines += [f" - {k}" + (f"={v}" if v else "") for k, v in engine_labels.items()]
    return "\n".join(lines) + "\n"
