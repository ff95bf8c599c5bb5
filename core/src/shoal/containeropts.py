"""Docker's container options on ``service create``/``service update`` (issue 17 item 10).

Capabilities, read-only root, init, sysctls, ulimits, DNS, extra hosts, groups, tty, log driver,
pids limit and generic resources: each validated here, on the manager, into the service spec
(Swarm's field names), with docker's ``-add``/``-rm`` forms on update. Kept apart from
``shoal.specs`` so that the option rules live in one small module; the runtimes turn the stored
fields into engine options (``shoal.runtimekit.task``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shoal.proto import objects_pb2 as pb

#: Linux capabilities (capabilities(7)), as docker names them without "CAP_".
CAPABILITIES = frozenset(
    "AUDIT_CONTROL AUDIT_READ AUDIT_WRITE BLOCK_SUSPEND BPF CHECKPOINT_RESTORE CHOWN DAC_OVERRIDE "
    "DAC_READ_SEARCH FOWNER FSETID IPC_LOCK IPC_OWNER KILL LEASE LINUX_IMMUTABLE MAC_ADMIN "
    "MAC_OVERRIDE MKNOD NET_ADMIN NET_BIND_SERVICE NET_BROADCAST NET_RAW PERFMON SETFCAP SETGID "
    "SETPCAP SETUID SYSLOG SYS_ADMIN SYS_BOOT SYS_CHROOT SYS_MODULE SYS_NICE SYS_PACCT SYS_PTRACE "
    "SYS_RAWIO SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG WAKE_ALARM".split()
)
#: The ulimit names docker's ``--ulimit`` knows (setrlimit(2) resources).
ULIMITS = frozenset(
    "as core cpu data fsize locks memlock msgqueue nice nofile nproc rss rtprio rttime sigpending stack".split()
)
_SYSCTL_KEY = re.compile(r"[a-zA-Z0-9_]+(?:[./][a-zA-Z0-9_-]+)*\Z")
_DOMAIN_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_GROUP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?\Z")
_GENERIC_KIND = re.compile(r"[A-Za-z0-9_.-]+\Z")
_LOG_DRIVER = re.compile(r"[A-Za-z0-9_.:/-]+\Z")
_INT64_MAX = 2**63 - 1


class OptionError(ValueError):
    """A container option's value is invalid; the message names the flag and the fix."""


def _list(params: Mapping[str, Any], key: str, flag: str) -> list[str]:
    values = params.get(key)
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise OptionError(f"invalid {flag}: give a list of strings")
    return values


def _merged(
    current: Iterable[str],
    added: list[str],
    removed: Iterable[str],
    key: Callable[[str], str],
) -> list[str]:
    """``current`` without the entries whose ``key`` is removed or re-added, then ``added``
    (later duplicates of a key win, order kept)."""
    gone = {key(item) for item in removed} | {key(item) for item in added}
    result = [item for item in current if key(item) not in gone]
    for item in added:
        result = [r for r in result if key(r) != key(item)] + [item]
    return result


# ------------------------------------------------------------------ single values


def capability(value: str, flag: str) -> str:
    """``net_admin``, ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; ``ALL`` stays ``ALL`` (docker's
    normalisation)."""
    name = value.strip().upper()
    if name == "ALL":
        return name
    bare = name.removeprefix("CAP_")
    if bare not in CAPABILITIES:
        raise OptionError(
            f'invalid {flag} "{value}": unknown capability; use a name from capabilities(7) such as '
            "NET_ADMIN or SYS_TIME, or ALL"
        )
    return "CAP_" + bare


def boolean(value: Any, flag: str) -> bool:
    """Go's ``strconv.ParseBool`` forms, as docker's boolean flags take them."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise OptionError(f'invalid {flag} "{value}": use true or false')


def sysctl(value: str, flag: str) -> tuple[str, str]:
    """``net.ipv4.ip_forward=1`` -> (key, value)."""
    key, sep, setting = value.partition("=")
    if not sep or not _SYSCTL_KEY.match(key.strip()):
        raise OptionError(f'invalid {flag} "{value}": use KEY=VALUE, e.g. net.core.somaxconn=1024')
    return key.strip(), setting


def _limit(text: str, value: str, flag: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -2
    if number < -1 or number > _INT64_MAX:
        raise OptionError(
            f'invalid {flag} "{value}": limits are whole numbers (-1 for unlimited), as in nofile=1024:2048'
        )
    return number


def ulimit(value: str, flag: str) -> pb.Ulimit:
    """``nofile=1024:2048`` or ``nproc=512`` (soft = hard)."""
    name, sep, limits = value.partition("=")
    name = name.strip()
    if not sep or name not in ULIMITS:
        raise OptionError(
            f'invalid {flag} "{value}": use NAME=SOFT[:HARD] with NAME one of {", ".join(sorted(ULIMITS))}'
        )
    soft_text, _, hard_text = limits.partition(":")
    soft = _limit(soft_text.strip(), value, flag)
    hard = _limit(hard_text.strip(), value, flag) if hard_text else soft
    if hard != -1 and (soft == -1 or soft > hard):
        raise OptionError(f'invalid {flag} "{value}": the soft limit must not exceed the hard limit')
    return pb.Ulimit(name=name, soft=soft, hard=hard)


def nameserver(value: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise OptionError(f'invalid {flag} "{value}": give a nameserver IP address such as 8.8.8.8') from None


def search_domain(value: str, flag: str) -> str:
    """A DNS search domain (``.`` = none, as in docker)."""
    domain = value.strip()
    if domain == ".":
        return domain
    labels = domain.rstrip(".").split(".")
    if len(domain) > 253 or not domain or not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise OptionError(f'invalid {flag} "{value}": give a domain name such as example.com')
    return domain


def dns_option(value: str, flag: str) -> str:
    option = value.strip()
    if not option or any(c.isspace() for c in option):
        raise OptionError(f'invalid {flag} "{value}": give a resolv.conf option such as ndots:2 or timeout:3')
    return option


def host_entry(value: str, flag: str) -> str:
    """docker's ``HOST:IP`` -> Swarm's stored ``IP HOST`` line."""
    host, sep, address = value.partition(":")
    host = host.strip()
    labels = host.rstrip(".").split(".")
    try:
        ip = str(ipaddress.ip_address(address.strip().strip("[]"))) if sep else ""
    except ValueError:
        ip = ""
    if not ip or not host or not all(_DOMAIN_LABEL.match(label) or label == "_" for label in labels):
        raise OptionError(f'invalid {flag} "{value}": use HOST:IP, e.g. db.local:10.0.0.5')
    return f"{ip} {host}"


def group(value: str, flag: str) -> str:
    name = value.strip()
    if not _GROUP.match(name):
        raise OptionError(f'invalid {flag} "{value}": give a group name or GID, e.g. audio or 1000')
    return name


def generic_resource(value: str, flag: str) -> pb.GenericResource:
    """``gpu=2``: a count of a kind of node resource."""
    kind, sep, count = value.partition("=")
    kind = kind.strip()
    if not sep or not _GENERIC_KIND.match(kind) or not count.strip().isdigit():
        raise OptionError(f'invalid {flag} "{value}": use KIND=COUNT, e.g. gpu=1')
    number = int(count.strip())
    if not 0 < number <= _INT64_MAX:
        raise OptionError(f'invalid {flag} "{value}": the count must be a whole number of 1 or more')
    return pb.GenericResource(kind=kind, value=number)


def pids_limit(value: Any, flag: str) -> int:
    text = str(value).strip()
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) > _INT64_MAX:
        raise OptionError(f'invalid {flag} "{value}": give a whole number of processes (0 = unlimited)')
    return int(text)


def log_options(values: list[str], flag: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values:
        key, sep, setting = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f'invalid {flag} "{item}": use KEY=VALUE, e.g. max-size=10m')
        result[key.strip()] = setting
    return result


# ------------------------------------------------------------------ applying to a spec


def apply(spec: pb.ServiceSpec, params: Mapping[str, Any], *, creating: bool) -> None:
    """Apply the container options present in ``params`` to ``spec``: create's lists
    (``--sysctl``...) and update's ``-add``/``-rm`` forms; ``--cap-add``/``--cap-drop`` are the
    same flags on both (on update each moves a capability from the other list, as in docker)."""
    container = spec.task.container
    _capabilities(container, params, creating=creating)
    for key, flag, field in (
        ("read_only", "--read-only", "read_only"),
        ("init", "--init", "init"),
        ("tty", "--tty", "tty"),
    ):
        if params.get(key) is not None:
            setattr(container, field, boolean(params[key], flag))

    sysctls = [sysctl(v, "--sysctl") for v in _list(params, "sysctl", "--sysctl")]
    sysctls += [sysctl(v, "--sysctl-add") for v in _list(params, "sysctl_add", "--sysctl-add")]
    for key in _list(params, "sysctl_rm", "--sysctl-rm"):
        container.sysctls.pop(key.partition("=")[0].strip(), None)
    for key, value in sysctls:
        container.sysctls[key] = value

    added_limits = [ulimit(v, "--ulimit") for v in _list(params, "ulimit", "--ulimit")]
    added_limits += [ulimit(v, "--ulimit-add") for v in _list(params, "ulimit_add", "--ulimit-add")]
    gone = {v.partition("=")[0].strip() for v in _list(params, "ulimit_rm", "--ulimit-rm")}
    gone |= {u.name for u in added_limits}
    kept = [u for u in container.ulimits if u.name not in gone]
    by_name = {u.name: u for u in added_limits}  # a repeated name: the last one wins
    del container.ulimits[:]
    container.ulimits.extend(kept + list(by_name.values()))

    _dns(container, params)
    _hosts(container, params)
    groups = [group(v, "--group") for v in _list(params, "group", "--group")]
    groups += [group(v, "--group-add") for v in _list(params, "group_add", "--group-add")]
    removed_groups = [v.strip() for v in _list(params, "group_rm", "--group-rm")]
    merged = _merged(container.groups, groups, removed_groups, key=str)
    del container.groups[:]
    container.groups.extend(merged)

    _log_driver(spec.task, params)
    _resources(spec.task, params)


def _capabilities(container: pb.ContainerSpec, params: Mapping[str, Any], *, creating: bool) -> None:
    add = [capability(v, "--cap-add") for v in _list(params, "cap_add", "--cap-add")]
    drop = [capability(v, "--cap-drop") for v in _list(params, "cap_drop", "--cap-drop")]
    both = sorted(set(add) & set(drop))
    if both:
        raise OptionError(f"--cap-add and --cap-drop both name {', '.join(both)}: give each capability once")
    if not add and not drop:
        return
    current_add = [c for c in container.capability_add if c not in drop]
    current_drop = [c for c in container.capability_drop if c not in add]
    del container.capability_add[:]
    del container.capability_drop[:]
    container.capability_add.extend(dict.fromkeys(current_add + add))
    container.capability_drop.extend(dict.fromkeys(current_drop + drop))


def _dns(container: pb.ContainerSpec, params: Mapping[str, Any]) -> None:
    config = container.dns_config
    for field, flag, check in (
        ("nameservers", "dns", nameserver),
        ("search", "dns_search", search_domain),
        ("options", "dns_option", dns_option),
    ):
        name = "--" + flag.replace("_", "-")
        added = [check(v, name) for v in _list(params, flag, name)]
        added += [check(v, name + "-add") for v in _list(params, flag + "_add", name + "-add")]
        removed = [v.strip() for v in _list(params, flag + "_rm", name + "-rm")]
        if field == "nameservers":
            removed = [nameserver(v, name + "-rm") for v in removed]
        current = getattr(config, field)
        merged = _merged(current, added, removed, key=str)
        del current[:]
        current.extend(merged)
    if not config.ListFields():
        container.ClearField("dns_config")


def _hosts(container: pb.ContainerSpec, params: Mapping[str, Any]) -> None:
    """``--host HOST:IP`` lines; ``--host-rm HOST:IP`` removes that line, ``--host-rm HOST``
    every line of that host (docker's rule)."""
    added = [host_entry(v, "--host") for v in _list(params, "host", "--host")]
    added += [host_entry(v, "--host-add") for v in _list(params, "host_add", "--host-add")]
    hosts = list(container.hosts)
    for item in _list(params, "host_rm", "--host-rm"):
        if ":" in item:
            line = host_entry(item, "--host-rm")
            hosts = [h for h in hosts if h != line]
        else:
            hosts = [h for h in hosts if h.split(" ", 1)[1] != item.strip()]
    hosts = [h for h in hosts if h not in added] + list(dict.fromkeys(added))
    del container.hosts[:]
    container.hosts.extend(hosts)


def _log_driver(task: pb.TaskSpec, params: Mapping[str, Any]) -> None:
    """``--log-driver NAME`` with its ``--log-opt``s; ``--log-opt`` alone changes the current
    driver's options (docker: the options go with the driver)."""
    name = params.get("log_driver")
    opts = log_options(_list(params, "log_opt", "--log-opt"), "--log-opt")
    if name is None and not opts:
        return
    if name is not None:
        name = str(name).strip()
        if name and not _LOG_DRIVER.match(name):
            raise OptionError(
                f'invalid --log-driver "{params["log_driver"]}": give a driver name such as json-file'
            )
        if not name:
            if opts:
                raise OptionError("--log-opt needs a --log-driver: give the driver the options are for")
            task.ClearField("log_driver")
            return
        task.log_driver.Clear()
        task.log_driver.name = name
    elif not task.log_driver.name:
        raise OptionError("--log-opt needs a --log-driver: give the driver the options are for")
    task.log_driver.options.update(opts)


def _resources(task: pb.TaskSpec, params: Mapping[str, Any]) -> None:
    if params.get("limit_pids") is not None:
        task.resources.limits.pids = pids_limit(params["limit_pids"], "--limit-pids")
    added = [
        generic_resource(v, "--generic-resource")
        for v in _list(params, "generic_resource", "--generic-resource")
    ]
    added += [
        generic_resource(v, "--generic-resource-add")
        for v in _list(params, "generic_resource_add", "--generic-resource-add")
    ]
    removed = {
        v.partition("=")[0].strip() for v in _list(params, "generic_resource_rm", "--generic-resource-rm")
    }
    if added or removed:
        reservations = task.resources.reservations
        kinds = removed | {g.kind for g in added}
        kept = [g for g in reservations.generic if g.kind not in kinds]
        latest = {g.kind: g for g in added}
        del reservations.generic[:]
        reservations.generic.extend(kept + list(latest.values()))
