"""Reading Compose files: YAML, ``${VAR}`` substitution, merging ``-c a.yml -c b.yml``, and the
check that every key is one docker's Compose format has (unknown keys are refused the way
docker's schema refuses them: ``Additional property X is not allowed``).

Each file is checked on its own, so an error names the file it is in; merging is docker
compose's: a later file's mapping keys override the earlier ones' (recursively).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shoal.stack.interpolate import InterpolationError, interpolate


class ComposeError(ValueError):
    """A Compose file that cannot be deployed: one line naming the file, the place and why."""


#: The service keys a stack turns into a service spec.
SERVICE_KEYS = frozenset(
    {
        "image", "command", "entrypoint", "environment", "env_file", "deploy", "healthcheck",
        "ports", "networks", "secrets", "configs", "volumes", "hostname", "user", "working_dir",
        "stop_grace_period", "stop_signal", "labels", "cap_add", "cap_drop", "read_only", "init",
        "sysctls", "ulimits", "dns", "dns_search", "dns_opt", "extra_hosts", "tty", "logging",
        "group_add",
    }
)  # fmt: skip
#: Compose keys swarm mode does not use: docker stack deploy names them and goes on.
IGNORED_SERVICE_KEYS = frozenset(
    {
        "build", "cgroup_parent", "container_name", "depends_on", "devices", "domainname",
        "expose", "external_links", "ipc", "links", "mac_address", "network_mode", "pid",
        "privileged", "restart", "security_opt", "shm_size", "stdin_open", "userns_mode",
        "cpu_shares", "cpus", "mem_limit", "isolation", "platform", "profiles", "pull_policy",
    }
)  # fmt: skip
DEPLOY_KEYS = {
    "(deploy)": frozenset(
        {"mode", "replicas", "placement", "resources", "restart_policy", "update_config",
         "rollback_config", "labels", "endpoint_mode"}
    ),
    "placement": frozenset({"constraints", "preferences", "max_replicas_per_node"}),
    "resources": frozenset({"limits", "reservations"}),
    "limits": frozenset({"cpus", "memory", "pids"}),
    "reservations": frozenset({"cpus", "memory", "generic_resources"}),
    "restart_policy": frozenset({"condition", "delay", "max_attempts", "window"}),
    "update_config": frozenset(
        {"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"}
    ),
}  # fmt: skip
DEPLOY_KEYS["rollback_config"] = DEPLOY_KEYS["update_config"]
HEALTHCHECK_KEYS = frozenset({"test", "interval", "timeout", "retries", "start_period", "disable"})
TOP_KEYS = frozenset({"version", "name", "services", "networks", "secrets", "configs", "volumes"})
TOP_OBJECT_KEYS = {
    "networks": frozenset({"driver", "driver_opts", "external", "name", "labels", "attachable", "ipam"}),
    "secrets": frozenset({"file", "external", "name", "labels"}),
    "configs": frozenset({"file", "external", "name", "labels"}),
    "volumes": frozenset({"driver", "driver_opts", "external", "name", "labels"}),
}


@dataclass
class ComposeProject:
    """The merged files: the document, and for each service the file that defined it last
    (named in errors found after merging)."""

    document: dict[str, Any]
    base_dir: Path = Path(".")  # relative paths are relative to the first file's folder
    service_files: dict[str, Path] = field(default_factory=dict)
    ignored: dict[str, list[str]] = field(default_factory=dict)

    def file_of(self, service: str) -> Path:
        return self.service_files[service]


def _mapping(value: Any, where: str, file: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ComposeError(f"{file}: {where} must be a mapping")
    return value


def _only(value: Mapping[str, Any], allowed: frozenset[str], where: str, file: Path) -> None:
    for key in value:
        if key not in allowed:
            raise ComposeError(f"{file}: {where}: Additional property {key} is not allowed")


def _check_deploy(deploy: Mapping[str, Any], where: str, file: Path) -> None:
    _only(deploy, DEPLOY_KEYS["(deploy)"], where, file)
    for key in ("placement", "resources", "restart_policy", "update_config", "rollback_config"):
        if key in deploy:
            section = _mapping(deploy[key], f"{where}.{key}", file)
            _only(section, DEPLOY_KEYS[key], f"{where}.{key}", file)
            if key == "resources":
                for sub in ("limits", "reservations"):
                    if sub in section:
                        inner = _mapping(section[sub], f"{where}.{key}.{sub}", file)
                        _only(inner, DEPLOY_KEYS[sub], f"{where}.{key}.{sub}", file)


def check_file(document: Any, file: Path) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """One file's structure checked: known keys, mappings where mappings belong. Returns the
    document and, per service, the keys swarm mode ignores."""
    top = _mapping(document, "(root)", file)
    _only(top, TOP_KEYS, "(root)", file)
    ignored: dict[str, list[str]] = {}
    for name, service in _mapping(top.get("services"), "services", file).items():
        where = f"services.{name}"
        service = _mapping(service, where, file)
        _only(service, SERVICE_KEYS | IGNORED_SERVICE_KEYS, where, file)
        ignored[name] = sorted(k for k in service if k in IGNORED_SERVICE_KEYS)
        if "deploy" in service:
            _check_deploy(_mapping(service["deploy"], f"{where}.deploy", file), f"{where}.deploy", file)
        if "healthcheck" in service:
            health = _mapping(service["healthcheck"], f"{where}.healthcheck", file)
            _only(health, HEALTHCHECK_KEYS, f"{where}.healthcheck", file)
    for kind, allowed in TOP_OBJECT_KEYS.items():
        for name, spec in _mapping(top.get(kind), kind, file).items():
            _only(_mapping(spec, f"{kind}.{name}", file), allowed, f"{kind}.{name}", file)
    return top, ignored


def merge(base: Any, override: Any) -> Any:
    """docker compose's merge of two files: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return override


def read_file(path: Path, env: Mapping[str, str]) -> Any:
    """One Compose file, parsed and substituted (``-`` is not supported: files only)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ComposeError(
            f"cannot read compose file {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ComposeError(f"{path}:{where}: {problem}") from None
    try:
        return interpolate(document, env)
    except InterpolationError as exc:
        raise ComposeError(f"{path}: {exc}") from None


def load(paths: list[Path], env: Mapping[str, str]) -> ComposeProject:
    """The files given with ``-c``, each checked, merged in order."""
    project = ComposeProject(document={}, base_dir=paths[0].parent)
    for path in paths:
        document, ignored = check_file(read_file(path, env), path)
        for name in _mapping(document.get("services"), "services", path):
            project.service_files[name] = path
            project.ignored[name] = sorted(set(project.ignored.get(name, [])) | set(ignored[name]))
        project.document = merge(project.document, document)
    if not project.document.get("services"):
        raise ComposeError(f"{paths[-1]}: services: the stack has no services (add a services: section)")
    return project
