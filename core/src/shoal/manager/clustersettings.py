"""The swarm settings ``swarm init`` and ``swarm update`` share: certificate expiry, dispatcher
heartbeat, task history limit, snapshot interval and old snapshots kept (docker's flags).

Each option given becomes a change to the cluster object, checked before any is applied, so a
bad value is one line naming the flag and nothing is changed (``swarm update``) or created
(``swarm init``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shoal.manager.caserver import min_cert_expiry
from shoal.proto import objects_pb2 as pb
from shoal.specs import INT64_MAX, UINT64_MAX, SpecError, parse_duration, whole_number

Change = Callable[[pb.Cluster], None]
UINT32_MAX = 2**32 - 1

#: The flags this module reads, for "nothing to update" messages.
FLAGS = (
    "--cert-expiry",
    "--dispatcher-heartbeat",
    "--task-history-limit",
    "--snapshot-interval",
    "--max-snapshots",
)


def _cert_expiry(value: Any) -> Change:
    expiry = parse_duration(str(value), "--cert-expiry")
    floor = min_cert_expiry()
    if expiry < floor:
        raise SpecError(
            f'invalid --cert-expiry "{value}": the minimum is 1h '
            "(shorter certificates would leave nodes no time to renew)"
            if floor >= 3600
            else f'invalid --cert-expiry "{value}": the minimum is {floor:g}s'
        )
    return lambda c: setattr(c.spec.ca_config, "node_cert_expiry", expiry)


def _heartbeat(value: Any) -> Change:
    period = parse_duration(str(value), "--dispatcher-heartbeat")
    if period <= 0:
        raise SpecError(f'invalid --dispatcher-heartbeat "{value}": must be positive, e.g. 5s')
    return lambda c: setattr(c.spec.dispatcher, "heartbeat_period", period)


def _history(value: Any) -> Change:
    # int64 as in docker, where a negative limit means "never delete task history".
    limit = whole_number(value, "--task-history-limit", -INT64_MAX - 1, INT64_MAX)
    return lambda c: setattr(c.spec.orchestration, "task_history_retention_limit", limit)


def _snapshot_interval(value: Any) -> Change:
    interval = whole_number(value, "--snapshot-interval", 1, UINT64_MAX)
    return lambda c: setattr(c.spec.raft, "snapshot_interval", interval)


def _max_snapshots(value: Any) -> Change:
    kept = whole_number(value, "--max-snapshots", 0, UINT32_MAX)
    return lambda c: setattr(c.spec.raft, "keep_old_snapshots", kept)


_PARSERS: dict[str, Callable[[Any], Change]] = {
    "cert_expiry": _cert_expiry,
    "dispatcher_heartbeat": _heartbeat,
    "task_history_limit": _history,
    "snapshot_interval": _snapshot_interval,
    "max_snapshots": _max_snapshots,
}


def changes(params: Mapping[str, Any]) -> list[Change]:
    """One change per setting given in ``params``; ``SpecError`` for the first bad value."""
    return [parse(params[key]) for key, parse in _PARSERS.items() if params.get(key) is not None]
