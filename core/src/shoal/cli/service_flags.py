"""The flags of ``service create`` and ``service update`` as plain data, without click.

``service_opts`` turns these tables into click options; ``fastpath`` parses a detached
``service create`` from the same tables without importing click at all (the CLI's start-up
counts in every command's time, issue 18 item 4). A test holds the two to the same options.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs the fast path ~2 ms
if TYPE_CHECKING:
    from typing import Any

# (flags, options) for settings both commands take as single values.
SCALARS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
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
BOOLEANS: list[tuple[tuple[str, ...], str]] = [
    (("--read-only/--no-read-only",), "Mount the container's root filesystem as read only."),
    (
        ("--init/--no-init",),
        "Use an init inside each service container to forward signals and reap processes.",
    ),
    (("-t", "--tty/--no-tty"), "Allocate a pseudo-TTY."),
]
#: List flags spelled the same on create and update.
BOTH_LISTS: list[tuple[tuple[str, ...], str, str]] = [
    (("--cap-add",), "cap_add", "Add a Linux capability (e.g. NET_ADMIN, or ALL)."),
    (("--cap-drop",), "cap_drop", "Drop a Linux capability (e.g. CHOWN, or ALL)."),
    (("--log-opt",), "log_opt", "Logging driver option (KEY=VALUE)."),
]
for _prefix, _what in (("update", "updates"), ("rollback", "rollbacks")):
    SCALARS += [
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

CREATE_LISTS: list[tuple[tuple[str, ...], str, str]] = [
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

UPDATE_LISTS: list[tuple[str, str, str]] = [
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


def create_params(image: str, args: list[str] | tuple[str, ...], options: dict[str, Any]) -> dict[str, Any]:
    """``service.create``'s parameters from the command's values, before the files
    (``--env-file``) and credentials (``--with-registry-auth``) the client reads: click's
    ``service create`` and ``fastpath`` both start from here, so they send the same request."""
    params = params_of(options)
    params.update(image=image, args=list(args))
    params.pop("no_resolve_image", None)  # shoal never resolves an image to a remote digest
    return params


TRUE = ("1", "t", "T", "true", "TRUE", "True")
FALSE = ("0", "f", "F", "false", "FALSE", "False")


#: How ``fastpath`` treats an option: takes one value (the last given wins), takes one value
#: each time (a list), or is a flag (its constant; a boolean's ``--no-`` twin sets False).
VALUE, LIST, FLAG = "value", "list", "flag"


def _dest(flags: tuple[str, ...]) -> str:
    """click's parameter name for ``flags`` without an explicit one: the first long flag."""
    long = next(flag for flag in flags if flag.startswith("--"))
    return long[2:].split("/")[0].replace("-", "_")


def create_spec() -> list[tuple[str, tuple[str, ...], tuple[str, ...], str, object]]:
    """``service create``'s options in click's declaration order: (name, flags, ``--no-``
    flags, kind, default). ``service_cmd.service_create`` declares the same ones with click;
    ``test_cli_fastpath`` checks that the two agree option by option."""
    spec: list[tuple[str, tuple[str, ...], tuple[str, ...], str, object]] = [
        ("name", ("--name",), (), VALUE, ""),
        ("replicas", ("--replicas",), (), VALUE, None),
        ("mode", ("--mode",), (), VALUE, "replicated"),
        ("max_concurrent", ("--max-concurrent",), (), VALUE, None),
    ]
    spec += [(dest, flags, (), LIST, ()) for flags, dest, _ in CREATE_LISTS]
    for flags, opts in SCALARS:
        spec.append((_dest(flags), flags, (), FLAG if opts.get("is_flag") else VALUE, None))
    for flags, _ in BOOLEANS:
        *short, pair = flags
        on, off = pair.split("/")
        spec.append((_dest(flags), (*short, on), (off,), FLAG, None))
    spec += [(dest, flags, (), LIST, ()) for flags, dest, _ in BOTH_LISTS]
    spec += [
        ("detach", ("-d", "--detach"), (), FLAG, False),
        ("quiet", ("-q", "--quiet"), (), FLAG, False),
        ("with_registry_auth", ("--with-registry-auth",), (), FLAG, False),
    ]
    return spec
