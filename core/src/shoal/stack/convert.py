"""A merged Compose project as a plan: the networks, secrets and configs to create and each
service as ``service create``'s options (the same names the CLI sends), so the managers build
and check its spec exactly as for ``service create``.

Names are docker's: ``STACK_KEY`` unless the file says ``name:`` or ``external: true``; every
object gets the ``com.docker.stack.namespace`` label; a service that names no network joins
``STACK_default``, and joins each stack network with its short name as an alias.
"""

from __future__ import annotations

import base64
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.cli.secret_cmd import LIMITS
from shoal.stack.compose import ComposeError, ComposeProject

NAMESPACE_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"


@dataclass
class StackObject:
    """A network, secret or config of the stack: made by the stack, or ``external``."""

    kind: str
    key: str
    name: str
    external: bool
    labels: dict[str, str] = field(default_factory=dict)
    data: str = ""  # secrets and configs: base64 of the file's bytes
    options: dict[str, Any] = field(default_factory=dict)  # networks: network.create's extras


@dataclass
class StackService:
    key: str
    name: str
    params: dict[str, Any]
    file: Path


@dataclass
class StackPlan:
    namespace: str
    services: list[StackService]
    objects: list[StackObject]
    ignored: dict[str, list[str]]


class _Where:
    """Error context: the file and the dotted place in it."""

    def __init__(self, file: Path, path: str) -> None:
        self.file, self.path = file, path

    def at(self, key: str | int) -> _Where:
        if isinstance(key, int):
            return _Where(self.file, f"{self.path}[{key}]")
        return _Where(self.file, f"{self.path}.{key}" if self.path else key)

    def error(self, problem: str) -> ComposeError:
        return ComposeError(f"{self.file}: {self.path}: {problem}")


#: ``service create`` flags as the Compose keys they come from, so that an error the spec
#: builder reports with a flag's name also names the key in the file.
FLAG_KEYS = {
    "--replicas": "deploy.replicas",
    "--mode": "deploy.mode",
    "--endpoint-mode": "deploy.endpoint_mode",
    "--label": "deploy.labels",
    "--constraint": "deploy.placement.constraints",
    "--placement-pref": "deploy.placement.preferences",
    "--replicas-max-per-node": "deploy.placement.max_replicas_per_node",
    "--limit-cpu": "deploy.resources.limits.cpus",
    "--limit-memory": "deploy.resources.limits.memory",
    "--limit-pids": "deploy.resources.limits.pids",
    "--reserve-cpu": "deploy.resources.reservations.cpus",
    "--reserve-memory": "deploy.resources.reservations.memory",
    "--generic-resource": "deploy.resources.reservations.generic_resources",
    **{
        f"--restart-{k.replace('_', '-')}": f"deploy.restart_policy.{k}"
        for k in ("condition", "delay", "window")
    },
    "--restart-max-attempts": "deploy.restart_policy.max_attempts",
    **{
        f"--{section}-{k.replace('_', '-')}": f"deploy.{section}_config.{k}"
        for section in ("update", "rollback")
        for k in ("parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order")
    },
    "--health-cmd": "healthcheck.test",
    **{
        f"--health-{k.replace('_', '-')}": f"healthcheck.{k}"
        for k in ("interval", "timeout", "retries", "start_period")
    },
    "--env": "environment",
    "--container-label": "labels",
    "--publish": "ports",
    "--mount": "volumes",
    "--entrypoint": "entrypoint",
    "--hostname": "hostname",
    "--workdir": "working_dir",
    "--user": "user",
    "--stop-grace-period": "stop_grace_period",
    "--stop-signal": "stop_signal",
    "--cap-add": "cap_add",
    "--cap-drop": "cap_drop",
    "--sysctl": "sysctls",
    "--ulimit": "ulimits",
    "--dns": "dns",
    "--dns-search": "dns_search",
    "--dns-option": "dns_opt",
    "--host": "extra_hosts",
    "--group": "group_add",
    "--log-driver": "logging.driver",
    "--log-opt": "logging.options",
}


def compose_key_of(message: str) -> str:
    """The Compose key behind the first ``--flag`` a spec error names ("" when none)."""
    for word in message.replace('"', " ").split():
        if word in FLAG_KEYS:
            return FLAG_KEYS[word]
    return ""


def _text(value: Any, where: _Where) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise where.error(f"must be a string, not {type(value).__name__}")


def _list(value: Any, where: _Where) -> list[Any]:
    if isinstance(value, (str, int)):
        return [value]
    if not isinstance(value, list):
        raise where.error("must be a list")
    return value


def _map(value: Any, where: _Where) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error("must be a mapping")
    return value


def _pairs(value: Any, where: _Where, bare: Callable[[str], str | None] | None = None) -> list[str]:
    """A list of ``KEY=VALUE`` or a mapping, as ``KEY=VALUE`` strings; a bare ``KEY`` (or a
    null value) goes to ``bare`` (the environment takes the shell's value)."""
    items: list[str] = []
    if isinstance(value, dict):
        entries = [(str(k), v) for k, v in value.items()]
    else:
        entries = []
        for i, item in enumerate(_list(value, where)):
            key, sep, rest = _text(item, where.at(i)).partition("=")
            entries.append((key, rest if sep else None))
    for key, raw in entries:
        if raw is None:
            found = bare(key) if bare else ""
            if found is not None:
                items.append(f"{key}={found}")
        else:
            items.append(f"{key}={_text(raw, where.at(key))}")
    return items


def _strings(value: Any, where: _Where) -> list[str]:
    return [_text(v, where.at(i)) for i, v in enumerate(_list(value, where))]


def _words(value: Any, where: _Where) -> list[str]:
    """``command``: a list as it is, a string split as a shell does."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise where.error(f"cannot split {value!r}: {exc}") from None
    return _strings(value, where)


def _named(project: ComposeProject, kind: str, namespace: str, where: _Where) -> dict[str, StackObject]:
    """The top-level ``networks``/``secrets``/``configs`` section as stack objects."""
    objects: dict[str, StackObject] = {}
    for key, raw in _map(project.document.get(kind), where.at(kind)).items():
        spec = _map(raw, where.at(kind).at(key))
        here = where.at(kind).at(key)
        external = spec.get("external", False)
        if isinstance(external, dict):  # the old form: external: {name: X}
            spec = {**spec, "name": external.get("name", spec.get("name"))}
            external = True
        if not isinstance(external, bool):
            raise here.at("external").error("must be true or false")
        given = spec.get("name")
        name = _text(given, here.at("name")) if given else (key if external else f"{namespace}_{key}")
        obj = StackObject(kind=kind[:-1], key=key, name=name, external=external)
        if not external:
            obj.labels = dict(p.split("=", 1) for p in _pairs(spec.get("labels", {}), here.at("labels")))
            obj.labels[NAMESPACE_LABEL] = namespace
        if kind in ("secrets", "configs") and not external:
            if "file" not in spec:
                raise here.error("give file: PATH (or external: true)")
            path = project.base_dir / os.path.expanduser(_text(spec["file"], here.at("file")))
            limit = LIMITS[obj.kind]
            try:
                with path.open("rb") as handle:
                    data = handle.read(limit + 1)  # a huge file is refused, not read whole
            except OSError as exc:
                raise here.at("file").error(f"cannot read {path}: {exc.strerror or exc}") from None
            if len(data) > limit:
                raise here.at("file").error(f"{path} is too large: the limit is {limit // 1024} KiB")
            obj.data = base64.b64encode(data).decode()
        if kind == "networks" and not external:
            obj.options = _network_options(spec, here)
        objects[key] = obj
    return objects


def _network_options(spec: Mapping[str, Any], where: _Where) -> dict[str, Any]:
    driver = _text(spec.get("driver", "overlay"), where.at("driver"))
    options: dict[str, Any] = {
        "driver": driver,
        "options": _pairs(spec.get("driver_opts", {}), where.at("driver_opts")),
        "attachable": bool(spec.get("attachable", False)),
    }
    ipam = _map(spec.get("ipam"), where.at("ipam"))
    configs = _list(ipam.get("config", []), where.at("ipam").at("config"))
    if configs:
        first = _map(configs[0], where.at("ipam").at("config").at(0))
        if "subnet" in first:
            options["subnet"] = _text(first["subnet"], where.at("ipam").at("config").at(0).at("subnet"))
        if "gateway" in first:
            options["gateway"] = _text(first["gateway"], where.at("ipam").at("config").at(0).at("gateway"))
    return options


def plan(project: ComposeProject, namespace: str, env: Mapping[str, str]) -> StackPlan:
    """The whole stack: its objects (only those a service uses, ``STACK_default`` when a
    service names no network) and its services' options. Raises ``ComposeError``."""
    first = _Where(next(iter(project.service_files.values())), "")
    top = {kind: _named(project, kind, namespace, first) for kind in ("networks", "secrets", "configs")}
    top["networks"].setdefault(
        "default",
        StackObject(
            kind="network",
            key="default",
            name=f"{namespace}_default",
            external=False,
            labels={NAMESPACE_LABEL: namespace},
            options={"driver": "overlay", "options": [], "attachable": False},
        ),
    )
    volumes = _map(project.document.get("volumes"), _Where(first.file, "volumes"))
    used: dict[str, set[str]] = {"networks": set(), "secrets": set(), "configs": set()}
    services = []
    for key, raw in sorted(_map(project.document.get("services"), _Where(first.file, "services")).items()):
        where = _Where(project.file_of(key), f"services.{key}")
        params = _service(key, _map(raw, where), where, namespace, project, top, volumes, used, env)
        services.append(StackService(key=key, name=f"{namespace}_{key}", params=params, file=where.file))
    objects = [obj for kind in top for k, obj in top[kind].items() if k in used[kind]]
    return StackPlan(namespace=namespace, services=services, objects=objects, ignored=project.ignored)


def _service(
    key: str,
    raw: dict[str, Any],
    where: _Where,
    namespace: str,
    project: ComposeProject,
    top: dict[str, dict[str, StackObject]],
    volumes: dict[str, Any],
    used: dict[str, set[str]],
    env: Mapping[str, str],
) -> dict[str, Any]:
    if not raw.get("image"):
        raise where.error("has no image (swarm services need image:, build: is not supported)")
    image = _text(raw["image"], where.at("image"))
    params: dict[str, Any] = {"name": f"{namespace}_{key}", "image": image, "args": []}
    if "command" in raw:
        params["args"] = _words(raw["command"], where.at("command"))
    if "entrypoint" in raw:
        entry = raw["entrypoint"]
        params["entrypoint"] = (
            entry if isinstance(entry, str) else shlex.join(_strings(entry, where.at("entrypoint")))
        )
    for compose_key, option in (
        ("hostname", "hostname"),
        ("user", "user"),
        ("working_dir", "workdir"),
        ("stop_grace_period", "stop_grace_period"),
        ("stop_signal", "stop_signal"),
    ):
        if compose_key in raw:
            params[option] = _text(raw[compose_key], where.at(compose_key))
    params["env"] = _environment(raw, where, project.base_dir, env)
    params["container_labels"] = [
        *_pairs(raw.get("labels", {}), where.at("labels")),
        f"{NAMESPACE_LABEL}={namespace}",
    ]
    _deploy(_map(raw.get("deploy"), where.at("deploy")), where.at("deploy"), params)
    params["labels"] = [*params.get("labels", []), f"{NAMESPACE_LABEL}={namespace}", f"{IMAGE_LABEL}={image}"]
    if "healthcheck" in raw:
        _healthcheck(_map(raw["healthcheck"], where.at("healthcheck")), where.at("healthcheck"), params)
    params["publish"] = [
        _port(p, where.at("ports").at(i))
        for i, p in enumerate(_list(raw.get("ports", []), where.at("ports")))
    ]
    params["networks"] = _networks(key, raw, where, top["networks"], used["networks"])
    for kind, default_target in (("secrets", lambda k: k), ("configs", lambda k: "/" + k)):
        params[kind] = [
            _file_ref(item, where.at(kind).at(i), kind, top[kind], used[kind], default_target)
            for i, item in enumerate(_list(raw.get(kind, []), where.at(kind)))
        ]
    params["mounts"] = [
        _volume(v, where.at("volumes").at(i), namespace, project.base_dir, volumes)
        for i, v in enumerate(_list(raw.get("volumes", []), where.at("volumes")))
    ]
    _container_options(raw, where, params)
    return {k: v for k, v in params.items() if v != [] or k == "args"}


def _environment(raw: Mapping[str, Any], where: _Where, base: Path, env: Mapping[str, str]) -> list[str]:
    """``env_file`` first, ``environment`` over it (compose's precedence); a bare name takes
    the deploying shell's value, or is left out when unset."""
    import click

    from shoal.cli.service_opts import env_from_files  # one reader for --env-file and env_file

    entries: list[str] = []
    if "env_file" in raw:
        files = [str(base / os.path.expanduser(p)) for p in _strings(raw["env_file"], where.at("env_file"))]
        try:
            entries = env_from_files(files)
        except click.UsageError as exc:
            raise where.at("env_file").error(
                exc.format_message().replace("invalid --env-file", "invalid env_file")
            ) from None
    given = _pairs(raw.get("environment", {}), where.at("environment"), bare=env.get)
    keys = {e.partition("=")[0] for e in given}
    return [e for e in entries if e.partition("=")[0] not in keys] + given


_OPTION_SECTIONS = {
    "restart_policy": {"condition": "restart_condition", "delay": "restart_delay",
                       "max_attempts": "restart_max_attempts", "window": "restart_window"},
    "update_config": {k: f"update_{k}" for k in ("parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order")},
    "rollback_config": {k: f"rollback_{k}" for k in ("parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order")},
}  # fmt: skip


def _deploy(deploy: dict[str, Any], where: _Where, params: dict[str, Any]) -> None:
    for compose_key, option in (
        ("mode", "mode"),
        ("replicas", "replicas"),
        ("endpoint_mode", "endpoint_mode"),
    ):
        if compose_key in deploy:
            params[option] = _text(deploy[compose_key], where.at(compose_key))
    if "labels" in deploy:
        params["labels"] = _pairs(deploy["labels"], where.at("labels"))
    placement = _map(deploy.get("placement"), where.at("placement"))
    if "constraints" in placement:
        params["constraints"] = _strings(placement["constraints"], where.at("placement").at("constraints"))
    prefs = []
    for i, pref in enumerate(
        _list(placement.get("preferences", []), where.at("placement").at("preferences"))
    ):
        here = where.at("placement").at("preferences").at(i)
        pref = _map(pref, here)
        if set(pref) != {"spread"}:
            raise here.error("use spread: node.labels.KEY (the only preference swarm has)")
        prefs.append(f"spread={_text(pref['spread'], here.at('spread'))}")
    params["placement_prefs"] = prefs
    if "max_replicas_per_node" in placement:
        params["replicas_max_per_node"] = _text(placement["max_replicas_per_node"], where.at("placement"))
    resources = _map(deploy.get("resources"), where.at("resources"))
    for section, prefix in (("limits", "limit"), ("reservations", "reserve")):
        values = _map(resources.get(section), where.at("resources").at(section))
        for compose_key in ("cpus", "memory", "pids"):
            if compose_key in values:
                option = f"{prefix}_{compose_key[:-1] if compose_key == 'cpus' else compose_key}"
                params[option] = _text(values[compose_key], where.at("resources").at(section).at(compose_key))
        generic = []
        for i, item in enumerate(
            _list(values.get("generic_resources", []), where.at("resources").at(section))
        ):
            here = where.at("resources").at(section).at("generic_resources").at(i)
            spec = _map(_map(item, here).get("discrete_resource_spec"), here.at("discrete_resource_spec"))
            generic.append(f"{_text(spec.get('kind'), here)}={_text(spec.get('value'), here)}")
        if generic:
            params["generic_resource"] = generic
    for section, options in _OPTION_SECTIONS.items():
        values = _map(deploy.get(section), where.at(section))
        for compose_key, value in values.items():
            params[options[compose_key]] = _text(value, where.at(section).at(compose_key))


def _healthcheck(health: dict[str, Any], where: _Where, params: dict[str, Any]) -> None:
    if health.get("disable"):
        params["no_healthcheck"] = True
        return
    if "test" in health:
        test = health["test"]
        if isinstance(test, str):
            params["health_cmd"] = test
        else:
            words = _strings(test, where.at("test"))
            if words == ["NONE"]:
                params["no_healthcheck"] = True
            elif words and words[0] == "CMD-SHELL" and len(words) == 2:
                params["health_cmd"] = words[1]
            elif words and words[0] == "CMD":
                params["health_cmd"] = shlex.join(words[1:])
            else:
                raise where.at("test").error('use ["CMD", ...], ["CMD-SHELL", "..."], ["NONE"] or a string')
    for compose_key in ("interval", "timeout", "retries", "start_period"):
        if compose_key in health:
            params[f"health_{compose_key}"] = _text(health[compose_key], where.at(compose_key))


def _port(value: Any, where: _Where) -> str:
    """Short (``8080:80``, ``80``, ``8080:80/udp``) or long syntax, as ``--publish``'s text."""
    if isinstance(value, dict):
        unknown = set(value) - {"target", "published", "protocol", "mode"}
        if unknown:
            raise where.error(f"Additional property {sorted(unknown)[0]} is not allowed")
        if "target" not in value:
            raise where.error("target is required")
        parts = [f"target={_text(value['target'], where.at('target'))}"]
        parts += [
            f"{k}={_text(value[k], where.at(k))}" for k in ("published", "protocol", "mode") if k in value
        ]
        return ",".join(parts)
    text = _text(value, where)
    ports, _, protocol = text.partition("/")
    pieces = ports.split(":")
    if len(pieces) > 2:
        raise where.error(f'"{text}": a host IP is not supported in swarm mode, use PUBLISHED:TARGET')
    suffix = f",protocol={protocol}" if protocol else ""
    if len(pieces) == 1:
        return f"target={pieces[0]}{suffix}"
    return f"published={pieces[0]},target={pieces[1]}{suffix}"


def _networks(
    key: str, raw: Mapping[str, Any], where: _Where, networks: dict[str, StackObject], used: set[str]
) -> list[str]:
    """``--network`` texts: each with the service's short name as an alias (docker's)."""
    given = raw.get("networks")
    if given is None:
        given = ["default"]
    entries = (
        dict.fromkeys(_strings(given, where.at("networks")))
        if isinstance(given, list)
        else _map(given, where.at("networks"))
    )
    texts = []
    for name, options in entries.items():
        here = where.at("networks").at(name)
        if name not in networks:
            raise here.error(f'network "{name}" is not declared in the top-level networks: section')
        used.add(name)
        aliases = [key, *_strings(_map(options, here).get("aliases", []), here.at("aliases"))]
        texts.append(",".join([f"name={networks[name].name}"] + [f"alias={a}" for a in aliases]))
    return texts


def _file_ref(
    item: Any,
    where: _Where,
    kind: str,
    objects: dict[str, StackObject],
    used: set[str],
    default_target: Callable[[str], str],
) -> str:
    fields = {"source": item} if isinstance(item, str) else dict(_map(item, where))
    source = _text(fields.get("source", ""), where.at("source"))
    if source not in objects:
        raise where.error(f'{kind[:-1]} "{source}" is not declared in the top-level {kind}: section')
    used.add(source)
    parts = [
        f"source={objects[source].name}",
        f"target={_text(fields.get('target', default_target(source)), where.at('target'))}",
    ]
    for name in ("uid", "gid"):
        if name in fields:
            parts.append(f"{name}={_text(fields[name], where.at(name))}")
    if "mode" in fields:
        mode = fields["mode"]
        parts.append(
            f"mode={'0' + format(mode, 'o') if isinstance(mode, int) else _text(mode, where.at('mode'))}"
        )
    return ",".join(parts)


def _volume(value: Any, where: _Where, namespace: str, base: Path, volumes: Mapping[str, Any]) -> str:
    """``volumes``: short (``data:/path[:ro]``, ``./dir:/path``, ``/path``) or long syntax, as
    ``--mount``'s text; a named volume is ``STACK_NAME`` unless external or named."""
    if isinstance(value, dict):
        kind = _text(value.get("type", "volume"), where.at("type"))
        source = _text(value.get("source", ""), where.at("source"))
        target = _text(value.get("target", ""), where.at("target"))
        readonly = bool(value.get("read_only", False))
    else:
        parts = _text(value, where).split(":")
        if len(parts) > 3:
            raise where.error(f'"{value}": use SOURCE:TARGET[:ro]')
        readonly = len(parts) == 3 and parts[2] == "ro"
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    if not target:
        raise where.error("a mount needs a target path")
    if kind == "bind":
        source = str((base / os.path.expanduser(source)).resolve())
    elif kind == "volume" and source:
        if source not in volumes:
            raise where.error(f'volume "{source}" is not declared in the top-level volumes: section')
        spec = _map(volumes[source], _Where(where.file, f"volumes.{source}"))
        given = spec.get("name")
        source = str(given) if given else source if spec.get("external") else f"{namespace}_{source}"
    text = f"type={kind},{'source=' + source + ',' if source else ''}target={target}"
    return text + (",readonly" if readonly else "")


def _container_options(raw: Mapping[str, Any], where: _Where, params: dict[str, Any]) -> None:
    """The container options docker's stacks carry (the same ones as ``service create``)."""
    for compose_key, option in (
        ("cap_add", "cap_add"), ("cap_drop", "cap_drop"), ("dns", "dns"),
        ("dns_search", "dns_search"), ("dns_opt", "dns_option"), ("group_add", "group"),
    ):  # fmt: skip
        if compose_key in raw:
            params[option] = _strings(raw[compose_key], where.at(compose_key))
    for compose_key in ("read_only", "init", "tty"):
        if compose_key in raw:
            if not isinstance(raw[compose_key], bool):
                raise where.at(compose_key).error("must be true or false")
            params[compose_key] = raw[compose_key]
    if "sysctls" in raw:
        params["sysctl"] = _pairs(raw["sysctls"], where.at("sysctls"))
    if "extra_hosts" in raw:
        hosts = raw["extra_hosts"]
        if isinstance(hosts, dict):
            params["host"] = [f"{h}:{_text(ip, where.at('extra_hosts').at(h))}" for h, ip in hosts.items()]
        else:
            params["host"] = _strings(hosts, where.at("extra_hosts"))
    if "ulimits" in raw:
        limits = []
        for name, limit in _map(raw["ulimits"], where.at("ulimits")).items():
            here = where.at("ulimits").at(name)
            if isinstance(limit, dict):
                limits.append(f"{name}={_text(limit.get('soft'), here)}:{_text(limit.get('hard'), here)}")
            else:
                limits.append(f"{name}={_text(limit, here)}")
        params["ulimit"] = limits
    if "logging" in raw:
        logging = _map(raw["logging"], where.at("logging"))
        if "driver" in logging:
            params["log_driver"] = _text(logging["driver"], where.at("logging").at("driver"))
        params["log_opt"] = _pairs(logging.get("options", {}), where.at("logging").at("options"))
