"""The ``-f/--filter`` option of ``node ls``, ``node ps``, ``service ls`` and ``service ps``.

The manager does the filtering (``shoal.manager.listfilters``): the CLI only passes the
``KEY=VALUE`` strings on, so a script talking to the control API, and a call a follower
forwards to the leader, get the same rows and the same refusal of an unknown key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: The keys of the task lists (``service ps`` and ``node ps``).
TASK_FILTERS = "desired-state, id, label, name, node"


def filter_help(keys: str) -> str:
    return f"Filter output (KEY=VALUE; keys: {keys}). A key given twice matches either value."


def filter_params(filters: tuple[str, ...]) -> dict[str, Any]:
    """The control call's ``filters`` parameter, left out when none is given."""
    return {"filters": list(filters)} if filters else {}


def task_list_options(func: F) -> F:
    """The flags of a task list (``service ps``, ``stack ps``): ``-q``, ``--no-trunc``,
    ``--format``, ``-f``."""
    for decorator in reversed(
        [
            click.option("-q", "--quiet", is_flag=True, help="Only display task IDs."),
            click.option("--no-trunc", is_flag=True, help="Do not truncate output."),
            click.option("--format", "fmt", default=None, help="table, json, or a template."),
            click.option("-f", "--filter", "filters", multiple=True, help=filter_help(TASK_FILTERS)),
        ]
    ):
        func = decorator(func)
    return func
