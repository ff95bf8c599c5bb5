"""Turning what a user typed into validated object specs.

Validation lives on the manager (the control API calls these), so every client gets the
same clear one-line errors and nothing invalid is ever stored. Each error names the flag and
says what a valid value looks like.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shoal import defaults, placement
from shoal.proto import objects_pb2 as pb

_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB]?)\s*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_ENV_KEY = re.compile(r"^[^=\s]+$")

MIN_RESERVED_CPU_NANO = 1_000_000  # 0.001 CPU (Swarm's minimum)
MIN_RESERVED_MEMORY = 4 * 1024 * 1024  # 4 MiB
PULL_POLICIES = {
    "missing": pb.ContainerSpec.PULL_MISSING,
    "always": pb.ContainerSpec.PULL_ALWAYS,
    "never": pb.ContainerSpec.PULL_NEVER,
}


class SpecError(ValueError):
    """A user-supplied value is invalid; the message is shown as is."""


def parse_cpus(value: str, flag: str) -> int:
    """``"0.5"`` -> 500000000 nano CPUs."""
    try:
        cpus = float(value)
    except ValueError:
        raise SpecError(f'invalid {flag} "{value}": give a number of CPUs such as 0.5 or 2') from None
    if cpus < 0:
        raise SpecError(f'invalid {flag} "{value}": must not be negative')
    return round(cpus * 1e9)


def parse_memory(value: str, flag: str) -> int:
    """``"64MiB"``, ``"64m"``, ``"1g"``, ``"1024"`` -> bytes (binary multiples, like docker)."""
    match = _MEMORY.match(value)
    if not match:
        raise SpecError(f'invalid {flag} "{value}": give a size such as 64MiB, 512m or 1g')
    number, unit, _ = match.groups()
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit.lower()]
    return int(float(number) * scale)


def parse_duration(value: str, flag: str) -> float:
    """Go-style durations (``"5s"``, ``"1m30s"``, ``"300ms"``, ``"0s"``) -> seconds."""
    text = value.strip()
    if text == "0":
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise SpecError(f'invalid {flag} "{value}": give a duration such as 10s, 1m30s or 500ms')
    return total


def validate_name(name: str) -> str:
    if not name:
        raise SpecError("a service name is required: use --name NAME")
    if not _NAME.match(name):
        raise SpecError(
            f'invalid service name "{name}": use up to 63 letters, digits, "-", "_" or ".", '
            "starting and ending with a letter or digit"
        )
    return name


def _int(params: Mapping[str, Any], key: str, flag: str, default: int = 0, minimum: int = 0) -> int:
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SpecError(f'invalid {flag} "{value}": give a whole number') from None
    if number < minimum:
        raise SpecError(f'invalid {flag} "{value}": must be at least {minimum}')
    return number


def service_spec(params: Mapping[str, Any]) -> pb.ServiceSpec:
    """Build a ServiceSpec from ``service create`` parameters, with Swarm's defaults."""
    image = str(params.get("image") or "").strip()
    if not image:
        raise SpecError("an image is required: shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]")
    if any(c.isspace() for c in image) or image.startswith("-"):
        raise SpecError(f'invalid image reference "{image}"')
    spec = pb.ServiceSpec()
    spec.annotations.name = validate_name(str(params.get("name") or ""))
    for label in params.get("labels") or []:
        key, _, value = str(label).partition("=")
        spec.annotations.labels[key] = value

    container = spec.task.container
    container.image = image
    container.args.extend(str(a) for a in params.get("args") or [])
    entrypoint = params.get("entrypoint")
    if entrypoint:
        container.command.extend(str(entrypoint).split())
    for item in params.get("env") or []:
        key, _, _ = str(item).partition("=")
        if not key or not _ENV_KEY.match(key):
            raise SpecError(f'invalid --env "{item}": use KEY=VALUE')
        container.env.append(str(item))
    for label in params.get("container_labels") or []:
        key, _, value = str(label).partition("=")
        container.labels[key] = value
    container.hostname = str(params.get("hostname") or "")
    container.dir = str(params.get("workdir") or "")
    container.user = str(params.get("user") or "")
    grace = params.get("stop_grace_period")
    container.stop_grace_period = (
        parse_duration(str(grace), "--stop-grace-period")
        if grace not in (None, "")
        else defaults.STOP_GRACE_PERIOD
    )
    container.stop_signal = str(params.get("stop_signal") or "")
    pull = str(params.get("pull") or "missing")
    if pull not in PULL_POLICIES:
        raise SpecError(f'invalid --pull "{pull}": use always, missing or never')
    container.pull_policy = PULL_POLICIES[pull]

    resources = spec.task.resources
    if params.get("reserve_cpu"):
        nano = parse_cpus(str(params["reserve_cpu"]), "--reserve-cpu")
        if 0 < nano < MIN_RESERVED_CPU_NANO:
            raise SpecError(f'invalid --reserve-cpu "{params["reserve_cpu"]}": the minimum is 0.001')
        resources.reservations.nano_cpus = nano
    if params.get("reserve_memory"):
        memory = parse_memory(str(params["reserve_memory"]), "--reserve-memory")
        if 0 < memory < MIN_RESERVED_MEMORY:
            raise SpecError(f'invalid --reserve-memory "{params["reserve_memory"]}": the minimum is 4MiB')
        resources.reservations.memory_bytes = memory
    if params.get("limit_cpu"):
        resources.limits.nano_cpus = parse_cpus(str(params["limit_cpu"]), "--limit-cpu")
    if params.get("limit_memory"):
        resources.limits.memory_bytes = parse_memory(str(params["limit_memory"]), "--limit-memory")

    restart = spec.task.restart
    restart.CopyFrom(defaults.restart_policy())
    condition = params.get("restart_condition")
    if condition:
        conditions = {
            "none": pb.RestartPolicy.NONE,
            "on-failure": pb.RestartPolicy.ON_FAILURE,
            "any": pb.RestartPolicy.ANY,
        }
        if condition not in conditions:
            raise SpecError(f'invalid --restart-condition "{condition}": use none, on-failure or any')
        restart.condition = conditions[condition]
    if params.get("restart_delay") not in (None, ""):
        restart.delay = parse_duration(str(params["restart_delay"]), "--restart-delay")
    restart.max_attempts = _int(params, "restart_max_attempts", "--restart-max-attempts")
    if params.get("restart_window") not in (None, ""):
        restart.window = parse_duration(str(params["restart_window"]), "--restart-window")

    for expr in params.get("constraints") or []:
        try:
            placement.parse_constraint(str(expr))
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        spec.task.placement.constraints.append(str(expr))
    spec.task.placement.max_replicas = _int(params, "replicas_max_per_node", "--replicas-max-per-node")

    mode = str(params.get("mode") or "replicated")
    if mode == "replicated":
        spec.replicated.replicas = _int(params, "replicas", "--replicas", default=1)
    elif mode == "global":
        raise SpecError("--mode global is not supported yet: use --mode replicated")
    else:
        raise SpecError(f'invalid --mode "{mode}": use replicated')
    spec.update.CopyFrom(defaults.update_config())
    spec.rollback.CopyFrom(defaults.update_config())
    return spec


def replicas(value: Any, flag: str = "replicas") -> int:
    """A replica count from ``service scale NAME=N``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SpecError(f'invalid {flag} "{value}": give a whole number of replicas') from None
    if number < 0:
        raise SpecError(f'invalid {flag} "{value}": must not be negative')
    return number
