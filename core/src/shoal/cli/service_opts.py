"""The flags ``service create`` and ``service update`` share, defined once.

Create takes lists (``--env``, ``--mount``, ``--constraint``); update takes the same things as
``-add``/``-rm`` pairs, like docker. Values are passed to the manager as strings: it validates
them, so every client gets the same errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.parser import _OptionParser

F = TypeVar("F", bound=Callable[..., Any])

# (flags, options) for settings both commands take as single values.
_SCALARS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--reserve-cpu",), {"help": "Reserve CPUs."}),
    (("--reserve-memory",), {"help": "Reserve memory."}),
    (("--limit-cpu",), {"help": "Limit CPUs."}),
    (("--limit-memory",), {"help": "Limit memory."}),
    (("--replicas-max-per-node",), {"help": "Maximum tasks per node (0 = unlimited)."}),
    (("--restart-condition",), {"help": "none, on-failure or any (default any)."}),
    (("--restart-delay",), {"help": "Delay between restart attempts (default 5s)."}),
    (("--restart-max-attempts",), {"help": "Maximum number of restarts before giving up."}),
    (("--restart-window",), {"help": "Window used to evaluate the restart policy."}),
    (("--stop-grace-period",), {"help": "Time to wait before force killing a container (default 10s)."}),
    (("--stop-signal",), {"help": "Signal to stop the container."}),
    (("--entrypoint",), {"help": "Overwrite the default ENTRYPOINT of the image."}),
    (("--hostname",), {"help": "Container hostname."}),
    (("-w", "--workdir"), {"help": "Working directory inside the container."}),
    (("-u", "--user"), {"help": "Username or UID."}),
    (("--pull",), {"help": "Pull image: always, missing or never (default missing)."}),
    (("--health-cmd",), {"help": "Command to run to check health."}),
    (("--health-interval",), {"help": "Time between running the check (e.g. 30s)."}),
    (("--health-timeout",), {"help": "Maximum time to allow one check to run."}),
    (("--health-retries",), {"help": "Consecutive failures needed to report unhealthy."}),
    (("--health-start-period",), {"help": "Start period before failures count."}),
    (("--endpoint-mode",), {"help": "Endpoint mode: vip or dnsrr (default vip)."}),
    (
        ("--no-healthcheck",),
        {"is_flag": True, "default": None, "help": "Disable any container-specified HEALTHCHECK."},
    ),
    (("--limit-pids",), {"help": "Limit the number of processes in a container (0 = unlimited)."}),
    (("--log-driver",), {"help": "Logging driver for the service's containers, e.g. json-file."}),
    (
        ("--no-resolve-image",),
        {
            "is_flag": True,
            "default": None,
            "help": "Accepted for docker compatibility: shoal never resolves images remotely.",
        },
    ),
]
#: docker's boolean flags: bare, or ``--read-only=true|false`` (``DockerFlagsCommand``).
_BOOLEANS: list[tuple[tuple[str, ...], str]] = [
    (("--read-only/--no-read-only",), "Mount the container's root filesystem as read only."),
    (
        ("--init/--no-init",),
        "Use an init inside each service container to forward signals and reap processes.",
    ),
    (("-t", "--tty/--no-tty"), "Allocate a pseudo-TTY."),
]
#: List flags spelled the same on create and update.
_BOTH_LISTS: list[tuple[tuple[str, ...], str, str]] = [
    (("--cap-add",), "cap_add", "Add a Linux capability (e.g. NET_ADMIN, or ALL)."),
    (("--cap-drop",), "cap_drop", "Drop a Linux capability (e.g. CHOWN, or ALL)."),
    (("--log-opt",), "log_opt", "Logging driver option (KEY=VALUE)."),
]
for _prefix, _what in (("update", "updates"), ("rollback", "rollbacks")):
    _SCALARS += [
        ((f"--{_prefix}-parallelism",), {"help": f"Maximum number of tasks in {_what} at once (0 = all)."}),
        ((f"--{_prefix}-delay",), {"help": f"Delay between {_what} (e.g. 10s)."}),
        (
            (f"--{_prefix}-failure-action",),
            {
                "help": "Action on failure: pause, continue"
                + (", rollback" if _prefix == "update" else "")
                + "."
            },
        ),
        ((f"--{_prefix}-monitor",), {"help": "Duration after each task starts to monitor for failure."}),
        ((f"--{_prefix}-max-failure-ratio",), {"help": "Failure rate to tolerate (0 to 1)."}),
        ((f"--{_prefix}-order",), {"help": "stop-first or start-first."}),
    ]

_CREATE_LISTS: list[tuple[tuple[str, ...], str, str]] = [
    (("-e", "--env"), "env", "Set environment variables (KEY=VALUE)."),
    (("--label",), "labels", "Service labels (KEY=VALUE)."),
    (("--container-label",), "container_labels", "Container labels (KEY=VALUE)."),
    (("--constraint",), "constraints", "Placement constraint, e.g. node.role==worker."),
    (("--placement-pref",), "placement_prefs", "Placement preference, e.g. spread=node.labels.zone."),
    (("--mount",), "mounts", "Mount: type=bind|volume|tmpfs,source=...,target=...[,readonly]."),
    (
        ("-p", "--publish"),
        "publish",
        "Publish a port: PUBLISHED:TARGET[/udp] or published=P,target=T[,protocol=udp][,mode=host].",
    ),
    (("--secret",), "secrets", "Secret: NAME or source=NAME,target=FILE,uid=,gid=,mode=0444."),
    (("--config",), "configs", "Config: NAME or source=NAME,target=/PATH,uid=,gid=,mode=0444."),
    (("--network",), "networks", "Network to attach to: NAME or name=NAME[,alias=ALIAS]."),
    (("--env-file",), "env_file", "Read environment variables from a file (KEY=VALUE lines)."),
    (("--sysctl",), "sysctl", "Namespaced kernel parameter (KEY=VALUE)."),
    (("--ulimit",), "ulimit", "Ulimit: NAME=SOFT[:HARD], e.g. nofile=1024:2048."),
    (("--dns",), "dns", "Custom DNS server (an IP address)."),
    (("--dns-search",), "dns_search", "Custom DNS search domain."),
    (("--dns-option",), "dns_option", "DNS resolver option, e.g. ndots:2."),
    (("--host",), "host", "Add a custom host-to-IP mapping (HOST:IP)."),
    (("--group",), "group", "Add a supplementary group for the user."),
    (("--generic-resource",), "generic_resource", "Reserve a generic resource: KIND=COUNT, e.g. gpu=1."),
]

_UPDATE_LISTS: list[tuple[str, str, str]] = [
    ("env", "env", "an environment variable"),
    ("label", "label", "a service label"),
    ("container-label", "container_label", "a container label"),
    ("constraint", "constraint", "a placement constraint"),
    ("placement-pref", "placement_pref", "a placement preference"),
    ("mount", "mount", "a mount (remove by target path)"),
    ("publish", "publish", "a published port (remove by target port[/protocol])"),
    ("secret", "secret", "a secret (remove by name)"),
    ("config", "config", "a config (remove by name)"),
    ("network", "network", "a network (NAME or name=NAME,alias=ALIAS; remove by name)"),
    ("sysctl", "sysctl", "a namespaced kernel parameter (KEY=VALUE; remove by KEY)"),
    ("ulimit", "ulimit", "a ulimit (NAME=SOFT[:HARD]; remove by NAME)"),
    ("dns", "dns", "a custom DNS server"),
    ("dns-search", "dns_search", "a custom DNS search domain"),
    ("dns-option", "dns_option", "a DNS resolver option"),
    ("host", "host", "a custom host-to-IP mapping (HOST:IP; remove by HOST:IP or HOST)"),
    ("group", "group", "a supplementary group"),
    ("generic-resource", "generic_resource", "a generic resource reservation (KIND=COUNT; remove by KIND)"),
]


def _apply(func: F, decorators: list[Callable[[F], F]]) -> F:
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def common_options(func: F) -> F:
    """Flags that mean the same on create and update."""
    decorators: list[Callable[[F], F]] = [
        click.option(*flags, **{"default": None, **opts}) for flags, opts in _SCALARS
    ]
    decorators += [click.option(*flags, default=None, help=text) for flags, text in _BOOLEANS]
    decorators += [click.option(*flags, dest, multiple=True, help=text) for flags, dest, text in _BOTH_LISTS]
    return _apply(func, decorators)


def create_options(func: F) -> F:
    """``service create``'s list flags."""
    return _apply(
        func, [click.option(*flags, dest, multiple=True, help=text) for flags, dest, text in _CREATE_LISTS]
    )


def update_options(func: F) -> F:
    """``service update``'s ``-add``/``-rm`` flags."""
    decorators: list[Callable[[F], F]] = []
    for flag, dest, what in _UPDATE_LISTS:
        decorators.append(
            click.option(f"--{flag}-add", f"{dest}_add", multiple=True, help=f"Add or update {what}.")
        )
        decorators.append(click.option(f"--{flag}-rm", f"{dest}_rm", multiple=True, help=f"Remove {what}."))
    return _apply(func, decorators)


def params_of(options: dict[str, Any]) -> dict[str, Any]:
    """Click's values as request parameters: tuples become lists, unset values are dropped."""
    params: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, tuple):
            value = list(value)
        if value is None or value == []:
            continue
        params[key] = value
    return params


_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class _DockerFlagsParser(_OptionParser):
    """Click's parser, taking docker's ``--read-only=false`` form of a boolean flag (pflag's):
    ``=true`` is the bare flag and ``=false`` its ``--no-`` twin."""

    def _match_long_opt(self, opt: str, explicit_value: str | None, state: Any) -> None:
        if opt not in self._long_opt and opt[:2] not in self._opt_prefixes:
            # ``-d``: click tries every short flag as a long one first, and builds the refusal's
            # "did you mean" list (importing difflib) only to drop it and match ``-d`` as short.
            raise click.NoSuchOption(opt, ctx=self.ctx)
        if explicit_value is not None and f"--no-{opt[2:]}" in self._long_opt:
            if explicit_value in _FALSE:
                opt, explicit_value = f"--no-{opt[2:]}", None
            elif explicit_value in _TRUE:
                explicit_value = None
            else:
                raise click.BadOptionUsage(
                    opt,
                    f'invalid {opt} "{explicit_value}": use {opt}, {opt}=true or {opt}=false',
                    ctx=self.ctx,
                )
        super()._match_long_opt(opt, explicit_value, state)


class DockerFlagsCommand(click.Command):
    """A command whose boolean flags also take ``=true``/``=false``, as docker's do."""

    def make_parser(self, ctx: click.Context) -> _OptionParser:
        parser = _DockerFlagsParser(ctx)
        for param in self.get_params(ctx):
            param.add_to_parser(parser, ctx)
        return parser


def env_from_files(paths: list[str]) -> list[str]:
    """``--env-file``: each file's ``KEY=VALUE`` lines (blank lines and ``#`` comments skipped;
    a bare ``KEY`` takes this shell's value, or is left out when unset), read by the client as
    docker does; a file that cannot be read or a bad line is one line naming the file."""
    entries: list[str] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:  # no pathlib on every create's start-up
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.UsageError(
                f'invalid --env-file "{path}": {getattr(exc, "strerror", None) or exc}'
            ) from None
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.lstrip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not key or any(c.isspace() for c in key):
                raise click.UsageError(
                    f'invalid --env-file "{path}" line {number}: "{key}" is not a variable name (use KEY=VALUE)'
                )
            if sep:
                entries.append(f"{key}={value}")
            elif key in os.environ:
                entries.append(f"{key}={os.environ[key]}")
    return entries
