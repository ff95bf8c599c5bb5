"""Turning what a user typed into validated object specs.

Validation lives on the manager (the control API calls these), so every client gets the
same clear one-line errors and nothing invalid is ever stored. Each error names the flag and
says what a valid value looks like.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from shoal import containeropts, defaults, imageref, placement, tasktemplates
from shoal import ports as published
from shoal.proto import objects_pb2 as pb
from shoal.shellwords import ShellWordsError, split_words

_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB]?)\s*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_ENV_KEY = re.compile(r"^[^=\s]+$")
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+\Z")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")

#: The largest values the object model's integer fields hold.
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
INT32_MAX = 2**31 - 1
#: Replicas one service may ask for: every task lives in every manager's memory and the
#: orchestrator creates a scale-up's tasks in one transaction, so an absurd count would take the
#: managers down instead of running anything.
MAX_REPLICAS = 100_000
#: Go's time.Duration limit (int64 nanoseconds, about 292 years): docker refuses longer ones.
MAX_DURATION_SECONDS = INT64_MAX / 1e9
#: The kernel's HOST_NAME_MAX: sethostname() refuses longer names, so the task could never start.
HOSTNAME_MAX = 64
#: Signals a stop signal may name (Linux), with or without "SIG", in any case; or 1-64.
SIGNALS = frozenset(
    "HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT STOP "
    "TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS RTMIN RTMAX".split()
)

MIN_RESERVED_CPU_NANO = 1_000_000  # 0.001 CPU (Swarm's minimum)
MIN_RESERVED_MEMORY = 4 * 1024 * 1024  # 4 MiB
PULL_POLICIES = {
    "missing": pb.ContainerSpec.PULL_MISSING,
    "always": pb.ContainerSpec.PULL_ALWAYS,
    "never": pb.ContainerSpec.PULL_NEVER,
}


class SpecError(ValueError):
    """A user-supplied value is invalid; the message is shown as is."""


def parse_availability(value: Any) -> pb.NodeSpec.Availability.ValueType:
    """``--availability``: active, pause or drain (absent: active); anything else, an empty
    value too (as in docker), is refused."""
    if value is None:
        return pb.NodeSpec.ACTIVE
    availabilities = {"active": pb.NodeSpec.ACTIVE, "pause": pb.NodeSpec.PAUSE, "drain": pb.NodeSpec.DRAIN}
    if not isinstance(value, str) or value not in availabilities:
        raise SpecError(f'invalid --availability "{value}": use active, pause or drain')
    return availabilities[value]


def parse_cpus(value: str, flag: str) -> int:
    """``"0.5"`` -> 500000000 nano CPUs."""
    try:
        cpus = float(value)
    except ValueError:
        cpus = math.nan
    if not math.isfinite(cpus):
        raise SpecError(f'invalid {flag} "{value}": give a number of CPUs such as 0.5 or 2')
    if cpus < 0:
        raise SpecError(f'invalid {flag} "{value}": must not be negative')
    if cpus * 1e9 > INT64_MAX:
        raise SpecError(f'invalid {flag} "{value}": that is more CPUs than any machine has')
    return round(cpus * 1e9)


def parse_memory(value: str, flag: str) -> int:
    """``"64MiB"``, ``"64m"``, ``"1g"``, ``"1024"`` -> bytes (binary multiples, like docker)."""
    match = _MEMORY.match(value)
    if not match:
        raise SpecError(f'invalid {flag} "{value}": give a size such as 64MiB, 512m or 1g')
    number, unit, _ = match.groups()
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit.lower()]
    size = float(number) * scale
    if not size < INT64_MAX:  # also catches inf from a number with hundreds of digits
        raise SpecError(f'invalid {flag} "{value}": the largest size is 8 EiB')
    return int(size)


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
    if not total <= MAX_DURATION_SECONDS:
        raise SpecError(f'invalid {flag} "{value}": the longest duration is 2562047h (about 292 years)')
    return total


def whole_number(value: Any, flag: str, minimum: int, maximum: int) -> int:
    """A whole number in ``[minimum, maximum]`` from a JSON int or its decimal text (not a
    float, a bool or "1_000"), with one line naming the flag otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SpecError(f'invalid {flag} "{value}": give a whole number')
    if isinstance(value, str) and not _WHOLE_NUMBER.match(value.strip()):
        raise SpecError(f'invalid {flag} "{value}": give a whole number')
    if isinstance(value, str) and len(value.strip()) > 40:  # int() refuses over 4300 digits
        shown = value.strip()[:20] + f"... ({len(value.strip())} digits)"
        raise SpecError(f'invalid {flag} "{shown}": must be at most {maximum}')
    number = int(value)
    if number < minimum:
        raise SpecError(f'invalid {flag} "{value}": must be at least {minimum}')
    if number > maximum:
        raise SpecError(f'invalid {flag} "{value}": must be at most {maximum}')
    return number


def parse_tail(value: Any) -> int | None:
    """``service logs --tail``: a number of lines, or ``all`` (also when absent) for every line."""
    if value is None or value == "all":
        return None
    return whole_number(value, "--tail", 0, INT64_MAX)


def parse_stop_signal(value: Any) -> str:
    """A signal docker's ``ParseSignal`` accepts: a name (``SIGTERM``, ``term``) or 1-64."""
    text = str(value).strip()
    name = text.upper().removeprefix("SIG")
    if name in SIGNALS or (text.isdigit() and 1 <= int(text) <= 64):
        return text
    raise SpecError(
        f'invalid --stop-signal "{value}": give a signal name such as SIGTERM, SIGINT or SIGUSR1, '
        "or a number from 1 to 64"
    )


def parse_hostname(value: Any) -> str:
    """A container hostname: at most 64 characters (the kernel's limit), dot-separated labels
    of letters, digits and "-" not starting or ending with "-" (RFC 1123); empty = the default."""
    raw = str(value)
    shown = raw if len(raw) <= 70 else raw[:60] + f"... ({len(raw)} characters)"
    name = _template_probe(raw, f'--hostname "{shown}"')
    if len(name) > HOSTNAME_MAX:
        raise SpecError(f'invalid --hostname "{shown}": a hostname is at most {HOSTNAME_MAX} characters')
    if name and not all(_HOST_LABEL.match(label) for label in name.split(".")):
        raise SpecError(
            f'invalid --hostname "{shown}": use letters, digits and "-" in labels separated by ".", '
            'each label not starting or ending with "-"'
        )
    return raw


def _template_probe(text: str, what: str) -> str:
    """``text`` as it would look once a task expands its templates (tasktemplates.SAMPLE), so
    that the usual checks apply to it; a template that cannot be expanded is refused here, on
    the manager, instead of reaching the nodes. ``what`` names the flag and its value."""
    try:
        return tasktemplates.expand(text, tasktemplates.SAMPLE)
    except tasktemplates.TemplateError as exc:
        raise SpecError(f"invalid {what}: {exc}") from None


def parse_workdir(value: Any) -> str:
    """The working directory: absolute, as the engine demands; empty = the image's."""
    path = str(value)
    if path and not path.startswith("/"):
        raise SpecError(f'invalid --workdir "{path}": the working directory must be an absolute path')
    return path


def validate_name(name: str) -> str:
    """A service name: what docker accepts (up to 63 characters, like a DNS label)."""
    if not name:
        raise SpecError("a service name is required: use --name NAME")
    if not _NAME.match(name):
        raise SpecError(
            f'invalid service name "{name}": use up to 63 letters, digits, "-", "_" or ".", '
            "starting and ending with a letter or digit"
        )
    return name


def _int(
    params: Mapping[str, Any],
    key: str,
    flag: str,
    default: int = 0,
    minimum: int = 0,
    maximum: int = UINT64_MAX,
) -> int:
    """An integer option; absent (``None``) means ``default``. An empty string is an error,
    as in docker: it is a value that is not a number, not a missing one."""
    value = params.get(key)
    if value is None:
        return default
    return whole_number(value, flag, minimum, maximum)


def _given(params: Mapping[str, Any], key: str) -> bool:
    """Whether the request sets ``key``: present and not ``None`` (an empty string is a value:
    it clears a text setting and is refused where a number, duration or choice is expected)."""
    value = params.get(key)
    return value is not None and value != []


def _image(value: Any) -> str:
    image = str(value or "").strip()
    if not image:
        raise SpecError("an image is required: shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]")
    problem = imageref.reference_problem(image)
    if problem is not None:
        raise SpecError(f'invalid image reference "{image}": {problem}')
    return image


def strings(params: Mapping[str, Any], key: str, flag: str) -> list[str]:
    """A list option (``--env``, ``--label``...): a list of strings, or absent."""
    values = params.get(key)
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SpecError(f"invalid {flag}: give a list of strings")
    return values


def command_words(text: str, flag: str) -> list[str]:
    """A command given as one string (``--entrypoint``, ``--args``), split as docker splits it:
    as a shell would, quotes kept together (``"sh -c 'sleep 1'"`` is three words)."""
    try:
        return split_words(text)
    except ShellWordsError as exc:
        raise SpecError(f'invalid {flag} "{text}": {exc} (quote as in a shell)') from None


def _pairs(values: Any, flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in values or []:
        key, _, value = str(item).partition("=")
        if not key:
            raise SpecError(f'invalid {flag} "{item}": use KEY=VALUE')
        pairs.append((key, value))
    return pairs


def _env(values: Any, flag: str) -> list[str]:
    out = []
    for item in values or []:
        key = _template_probe(str(item), f'{flag} "{item}"').partition("=")[0]
        if not key or not _ENV_KEY.match(key):
            raise SpecError(f'invalid {flag} "{item}": use KEY=VALUE')
        out.append(str(item))
    return out


def _constraint(expr: Any) -> str:
    try:
        placement.parse_constraint(str(expr))
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return str(expr)


def _preference(expr: Any) -> str:
    try:
        placement.parse_preference(str(expr))
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return str(expr)


def parse_mount(text: str) -> pb.Mount:
    """``type=bind,source=/x,target=/y[,readonly]``, ``type=volume,...``, ``type=tmpfs,target=/t``."""
    mount = pb.Mount()
    kind = "volume"
    fields: dict[str, str] = {}
    for part in str(text).split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        if key in ("readonly", "ro") and not sep:
            value = "true"
        fields[key] = value.strip()
    kind = fields.pop("type", kind)
    types = {"bind": pb.Mount.BIND, "volume": pb.Mount.VOLUME, "tmpfs": pb.Mount.TMPFS}
    if kind not in types:
        raise SpecError(f'invalid --mount "{text}": type must be bind, volume or tmpfs')
    mount.type = types[kind]
    mount.source = fields.pop("source", fields.pop("src", ""))
    mount.target = fields.pop("target", fields.pop("destination", fields.pop("dst", "")))
    readonly = fields.pop("readonly", fields.pop("ro", "false")).lower()
    if readonly not in ("true", "false", "1", "0"):
        raise SpecError(f'invalid --mount "{text}": readonly takes true or false')
    mount.readonly = readonly in ("true", "1")
    if "tmpfs-size" in fields:
        mount.tmpfs_size_bytes = parse_memory(fields.pop("tmpfs-size"), "--mount tmpfs-size")
    if fields:
        raise SpecError(f'invalid --mount "{text}": unknown option {", ".join(sorted(fields))}')
    _check_mount_paths(mount, text)
    return mount


def _check_mount_paths(mount: pb.Mount, text: str) -> None:
    """The source and target rules, applied to what they expand to when they hold templates."""
    what = f'--mount "{text}"'
    source = _template_probe(mount.source, what)
    target = _template_probe(mount.target, what)
    if not target.startswith("/"):
        raise SpecError(f'invalid --mount "{text}": target must be an absolute path inside the container')
    if target.strip("/") == "":
        raise SpecError(f'invalid --mount "{text}": the target cannot be "/"')
    if mount.type == pb.Mount.VOLUME and source and not _VOLUME_NAME.match(source):
        raise SpecError(
            f'invalid --mount "{text}": a volume name is letters, digits, "_", "." and "-", '
            "starting with a letter or digit"
        )
    if mount.type == pb.Mount.BIND and not source.startswith("/"):
        raise SpecError(f'invalid --mount "{text}": a bind mount needs an absolute source path on the host')
    if mount.type == pb.Mount.TMPFS and source:
        raise SpecError(f'invalid --mount "{text}": a tmpfs mount takes no source')


def _update_config(config: pb.UpdateConfig, params: Mapping[str, Any], prefix: str) -> None:
    flag = f"--{prefix}"
    if _given(params, f"{prefix}_parallelism"):
        config.parallelism = _int(params, f"{prefix}_parallelism", f"{flag}-parallelism")
    if _given(params, f"{prefix}_delay"):
        config.delay = parse_duration(str(params[f"{prefix}_delay"]), f"{flag}-delay")
    if _given(params, f"{prefix}_monitor"):
        config.monitor = parse_duration(str(params[f"{prefix}_monitor"]), f"{flag}-monitor")
    if _given(params, f"{prefix}_failure_action"):
        action = str(params[f"{prefix}_failure_action"])
        actions = {"pause": pb.UpdateConfig.PAUSE, "continue": pb.UpdateConfig.CONTINUE}
        if prefix == "update":
            actions["rollback"] = pb.UpdateConfig.ROLLBACK
        if action not in actions:
            raise SpecError(f'invalid {flag}-failure-action "{action}": use {", ".join(actions)}')
        config.failure_action = actions[action]
    if _given(params, f"{prefix}_max_failure_ratio"):
        raw = params[f"{prefix}_max_failure_ratio"]
        try:
            ratio = float(raw)
        except (TypeError, ValueError):
            raise SpecError(f'invalid {flag}-max-failure-ratio "{raw}": give a number from 0 to 1') from None
        if not 0 <= ratio <= 1:
            raise SpecError(f'invalid {flag}-max-failure-ratio "{raw}": give a number from 0 to 1')
        config.max_failure_ratio = ratio
    if _given(params, f"{prefix}_order"):
        order = str(params[f"{prefix}_order"])
        orders = {"stop-first": pb.UpdateConfig.STOP_FIRST, "start-first": pb.UpdateConfig.START_FIRST}
        if order not in orders:
            raise SpecError(f'invalid {flag}-order "{order}": use stop-first or start-first')
        config.order = orders[order]


def _healthcheck(health: pb.HealthConfig, params: Mapping[str, Any]) -> None:
    if params.get("no_healthcheck"):
        if _given(params, "health_cmd"):
            raise SpecError("--no-healthcheck conflicts with --health-cmd")
        health.Clear()
        health.test.append("NONE")
        return
    if _given(params, "health_cmd"):
        del health.test[:]  # an empty --health-cmd goes back to the image's check, as in docker
        if params["health_cmd"] != "":
            health.test.extend(["CMD-SHELL", str(params["health_cmd"])])
    for key, field in (
        ("health_interval", "interval"),
        ("health_timeout", "timeout"),
        ("health_start_period", "start_period"),
    ):
        if _given(params, key):
            seconds = parse_duration(str(params[key]), "--" + key.replace("_", "-"))
            if 0 < seconds < 0.001:
                raise SpecError(f'invalid --{key.replace("_", "-")} "{params[key]}": the minimum is 1ms')
            setattr(health, field, seconds)
    if _given(params, "health_retries"):
        health.retries = _int(params, "health_retries", "--health-retries", maximum=INT32_MAX)


def _apply(spec: pb.ServiceSpec, params: Mapping[str, Any], *, creating: bool) -> None:
    """Apply every option present in ``params`` to ``spec`` (create lists or update add/rm)."""
    container = spec.task.container
    if creating:
        container.image = _image(params.get("image"))
    elif params.get("image") is not None:
        if not str(params["image"]).strip():
            raise SpecError('invalid --image "": give an image reference such as searchsvc:v1.0')
        container.image = _image(params["image"])
    if creating or params.get("args") is not None:
        del container.args[:]
        container.args.extend(strings(params, "args", "args"))
    if _given(params, "entrypoint"):
        del container.command[:]  # an empty --entrypoint goes back to the image's
        container.command.extend(command_words(str(params["entrypoint"]), "--entrypoint"))

    for key, value in _pairs(strings(params, "labels", "--label"), "--label") + _pairs(
        strings(params, "label_add", "--label-add"), "--label-add"
    ):
        spec.annotations.labels[key] = value
    for key in strings(params, "label_rm", "--label-rm"):
        spec.annotations.labels.pop(key, None)
    for key, value in _pairs(
        strings(params, "container_labels", "--container-label"), "--container-label"
    ) + _pairs(strings(params, "container_label_add", "--container-label-add"), "--container-label-add"):
        container.labels[key] = value
    for key in strings(params, "container_label_rm", "--container-label-rm"):
        container.labels.pop(key, None)

    env = list(container.env)
    removed = set(strings(params, "env_rm", "--env-rm"))
    added = _env(strings(params, "env", "--env"), "--env") + _env(
        strings(params, "env_add", "--env-add"), "--env-add"
    )
    added_keys = {item.partition("=")[0] for item in added}
    env = [e for e in env if e.partition("=")[0] not in removed | added_keys] + added
    del container.env[:]
    container.env.extend(env)

    # Text settings: an empty value clears them (the image's or the engine's default), as in docker.
    if _given(params, "hostname"):
        container.hostname = parse_hostname(params["hostname"])
    if _given(params, "workdir"):
        container.dir = parse_workdir(params["workdir"])
    if _given(params, "user"):
        container.user = str(params["user"])
    if _given(params, "stop_signal"):
        container.stop_signal = parse_stop_signal(params["stop_signal"]) if params["stop_signal"] else ""
    if _given(params, "stop_grace_period"):
        container.stop_grace_period = parse_duration(str(params["stop_grace_period"]), "--stop-grace-period")
    elif creating:
        container.stop_grace_period = defaults.STOP_GRACE_PERIOD
    if creating or _given(params, "pull"):
        pull = str(params["pull"]) if _given(params, "pull") else "missing"
        if pull not in PULL_POLICIES:
            raise SpecError(f'invalid --pull "{pull}": use always, missing or never')
        container.pull_policy = PULL_POLICIES[pull]

    mounts = list(container.mounts)
    gone = set(strings(params, "mount_rm", "--mount-rm"))
    new_mounts = [
        parse_mount(m)
        for m in strings(params, "mounts", "--mount") + strings(params, "mount_add", "--mount-add")
    ]
    targets = {m.target for m in new_mounts} | gone
    del container.mounts[:]
    container.mounts.extend([m for m in mounts if m.target not in targets] + new_mounts)
    _healthcheck(container.healthcheck, params)
    if not container.healthcheck.ListFields():
        container.ClearField("healthcheck")

    resources = spec.task.resources
    if _given(params, "reserve_cpu"):
        nano = parse_cpus(str(params["reserve_cpu"]), "--reserve-cpu")
        if 0 < nano < MIN_RESERVED_CPU_NANO:
            raise SpecError(f'invalid --reserve-cpu "{params["reserve_cpu"]}": the minimum is 0.001')
        resources.reservations.nano_cpus = nano
    if _given(params, "reserve_memory"):
        memory = parse_memory(str(params["reserve_memory"]), "--reserve-memory")
        if 0 < memory < MIN_RESERVED_MEMORY:
            raise SpecError(f'invalid --reserve-memory "{params["reserve_memory"]}": the minimum is 4MiB')
        resources.reservations.memory_bytes = memory
    if _given(params, "limit_cpu"):
        resources.limits.nano_cpus = parse_cpus(str(params["limit_cpu"]), "--limit-cpu")
    if _given(params, "limit_memory"):
        resources.limits.memory_bytes = parse_memory(str(params["limit_memory"]), "--limit-memory")

    restart = spec.task.restart
    if creating:
        restart.CopyFrom(defaults.restart_policy())
    if _given(params, "restart_condition"):
        condition = str(params["restart_condition"])
        conditions = {
            "none": pb.RestartPolicy.NONE,
            "on-failure": pb.RestartPolicy.ON_FAILURE,
            "any": pb.RestartPolicy.ANY,
        }
        if condition not in conditions:
            raise SpecError(f'invalid --restart-condition "{condition}": use none, on-failure or any')
        restart.condition = conditions[condition]
    if _given(params, "restart_delay"):
        restart.delay = parse_duration(str(params["restart_delay"]), "--restart-delay")
    if _given(params, "restart_max_attempts"):
        restart.max_attempts = _int(params, "restart_max_attempts", "--restart-max-attempts")
    if _given(params, "restart_window"):
        restart.window = parse_duration(str(params["restart_window"]), "--restart-window")

    place = spec.task.placement
    rm_constraints = set(strings(params, "constraint_rm", "--constraint-rm"))
    constraints = [c for c in place.constraints if c not in rm_constraints]
    constraints += [
        _constraint(c)
        for c in strings(params, "constraints", "--constraint")
        + strings(params, "constraint_add", "--constraint-add")
    ]
    del place.constraints[:]
    place.constraints.extend(dict.fromkeys(constraints))
    rm_prefs = set(strings(params, "placement_pref_rm", "--placement-pref-rm"))
    prefs = [p for p in place.preferences if p not in rm_prefs]
    prefs += [
        _preference(p)
        for p in strings(params, "placement_prefs", "--placement-pref")
        + strings(params, "placement_pref_add", "--placement-pref-add")
    ]
    del place.preferences[:]
    place.preferences.extend(prefs)
    if _given(params, "replicas_max_per_node"):
        place.max_replicas = _int(params, "replicas_max_per_node", "--replicas-max-per-node")

    if creating:
        mode = str(params["mode"]) if params.get("mode") is not None else "replicated"
        if mode == "replicated":
            spec.replicated.replicas = _int(params, "replicas", "--replicas", default=1, maximum=MAX_REPLICAS)
        elif mode == "global":
            if _given(params, "replicas"):
                raise SpecError("--replicas can only be used with replicated mode")
            getattr(spec, "global").SetInParent()  # "global" is a Python keyword
            if place.max_replicas:
                raise SpecError("--replicas-max-per-node can only be used with replicated mode")
        elif mode in JOB_MODES:
            _job_mode(spec, params, mode)
        else:
            raise SpecError(f'invalid --mode "{mode}": use replicated, global, replicated-job or global-job')
        if spec.WhichOneof("mode") not in ("replicated_job", "global_job"):
            spec.update.CopyFrom(defaults.update_config())
            spec.rollback.CopyFrom(defaults.update_config())
    elif _given(params, "replicas") and spec.WhichOneof("mode") == "replicated_job":
        total = _int(params, "replicas", "--replicas", maximum=MAX_REPLICAS)
        spec.replicated_job.total_completions = total
    elif _given(params, "replicas"):
        if spec.WhichOneof("mode") != "replicated":
            raise SpecError("--replicas can only be used with replicated mode")
        spec.replicated.replicas = _int(params, "replicas", "--replicas", maximum=MAX_REPLICAS)
    _job_options(spec, params)
    _update_config(spec.update, params, "update")
    _update_config(spec.rollback, params, "rollback")
    _endpoint(spec, params)
    try:
        containeropts.apply(spec, params, creating=creating)
    except containeropts.OptionError as exc:
        raise SpecError(str(exc)) from None
    if params.get("force"):
        spec.task.force_update += 1


JOB_MODES = ("replicated-job", "global-job")


def _job_mode(spec: pb.ServiceSpec, params: Mapping[str, Any], mode: str) -> None:
    """``--mode replicated-job|global-job`` (docker's rules): ``--replicas`` is the total of
    completions (default 1), ``--max-concurrent`` the tasks at once (default ``--replicas``);
    the restart condition defaults to on-failure, as a job that exited 0 is done."""
    if mode == "global-job":
        if _given(params, "replicas"):
            raise SpecError("--replicas can only be used with replicated or replicated-job mode")
        if spec.task.placement.max_replicas:
            raise SpecError("--replicas-max-per-node can only be used with replicated or replicated-job mode")
        spec.global_job.SetInParent()
    else:
        job = spec.replicated_job
        job.total_completions = _int(params, "replicas", "--replicas", default=1, maximum=MAX_REPLICAS)
        job.max_concurrent = job.total_completions
    if not _given(params, "restart_condition"):
        spec.task.restart.condition = pb.RestartPolicy.ON_FAILURE


def _job_options(spec: pb.ServiceSpec, params: Mapping[str, Any]) -> None:
    """``--max-concurrent`` only for a replicated job; no ``--update-*``/``--rollback-*`` on a
    job (a job has no rolling update: a changed job runs again)."""
    mode = spec.WhichOneof("mode")
    if _given(params, "max_concurrent"):
        if mode != "replicated_job":
            raise SpecError("--max-concurrent can only be used with replicated-job mode")
        spec.replicated_job.max_concurrent = _int(
            params, "max_concurrent", "--max-concurrent", minimum=1, maximum=MAX_REPLICAS
        )
    if mode in ("replicated_job", "global_job"):
        given = sorted(k for k in params if k.startswith(("update_", "rollback_")) and _given(params, k))
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise SpecError(f"{flag} cannot be used with a job: jobs have no rolling update or rollback")


ENDPOINT_MODES = {"vip": pb.EndpointSpec.VIP, "dnsrr": pb.EndpointSpec.DNSRR}


def _endpoint(spec: pb.ServiceSpec, params: Mapping[str, Any]) -> None:
    """``--publish`` (create), ``--publish-add``/``--publish-rm`` (update): see ``shoal.ports``;
    ``--endpoint-mode vip|dnsrr`` (dnsrr has no virtual IP, so no routing mesh: Swarm refuses
    it with ingress ports)."""
    added = strings(params, "publish", "--publish") + strings(params, "publish_add", "--publish-add")
    removed = strings(params, "publish_rm", "--publish-rm")
    if added or removed:
        flag = "--publish" if _given(params, "publish") else "--publish-add"
        try:
            ports = published.apply(spec.endpoint.ports, added, removed, flag)
        except published.PublishError as exc:
            raise SpecError(str(exc)) from None
        del spec.endpoint.ports[:]
        spec.endpoint.ports.extend(ports)
    if params.get("endpoint_mode") is not None:
        mode = params["endpoint_mode"]
        if not isinstance(mode, str) or mode not in ENDPOINT_MODES:
            raise SpecError(f'invalid --endpoint-mode "{mode}": use vip or dnsrr')
        spec.endpoint.mode = ENDPOINT_MODES[mode]
    if spec.endpoint.mode == pb.EndpointSpec.DNSRR and any(
        p.publish_mode == pb.PortConfig.INGRESS for p in spec.endpoint.ports
    ):
        raise SpecError(
            "port published with ingress mode can't be used with dnsrr mode: "
            "publish with mode=host, or use --endpoint-mode vip"
        )
    if not spec.endpoint.ListFields():
        spec.ClearField("endpoint")


def service_spec(params: Mapping[str, Any]) -> pb.ServiceSpec:
    """Build a ServiceSpec from ``service create`` parameters, with Swarm's defaults."""
    _image(params.get("image"))
    spec = pb.ServiceSpec()
    spec.annotations.name = validate_name(str(params.get("name") or ""))
    _apply(spec, params, creating=True)
    return spec


def updated_spec(current: pb.ServiceSpec, params: Mapping[str, Any]) -> pb.ServiceSpec:
    """The spec ``service update`` asks for: the current one with the given options changed."""
    spec = pb.ServiceSpec()
    spec.CopyFrom(current)
    _apply(spec, params, creating=False)
    return spec


def replicas(value: Any, flag: str = "replicas") -> int:
    """A replica count from ``service scale NAME=N``."""
    return whole_number(value, flag, 0, MAX_REPLICAS)
