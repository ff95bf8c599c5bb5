"""The flags ``service create`` and ``service update`` share, defined once.

Create takes lists (``--env``, ``--mount``, ``--constraint``); update takes the same things as
``-add``/``-rm`` pairs, like docker. Values are passed to the manager as strings: it validates
them, so every client gets the same errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

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
]


def _apply(func: F, decorators: list[Callable[[F], F]]) -> F:
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def common_options(func: F) -> F:
    """Flags that mean the same on create and update."""
    return _apply(func, [click.option(*flags, **{"default": None, **opts}) for flags, opts in _SCALARS])


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
