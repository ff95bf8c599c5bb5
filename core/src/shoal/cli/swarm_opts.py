"""The swarm settings ``swarm init`` and ``swarm update`` both take (docker's flags); the
manager validates them (``shoal.manager.clustersettings``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_SETTINGS: list[tuple[str, str]] = [
    ("--cert-expiry", "Validity period for node certificates (e.g. 2160h, default 90 days)."),
    ("--dispatcher-heartbeat", "Dispatcher heartbeat period (e.g. 5s, the default)."),
    ("--task-history-limit", "Task history retention limit (default 5)."),
    ("--snapshot-interval", "Number of log entries between store snapshots (default 10000)."),
    ("--max-snapshots", "Number of additional store snapshots to retain (default 0)."),
]


def cluster_setting_options(func: F) -> F:
    """Add the shared swarm settings flags to a command (each ``None`` when not given)."""
    for flag, text in reversed(_SETTINGS):
        func = click.option(flag, default=None, help=text)(func)
    return func
