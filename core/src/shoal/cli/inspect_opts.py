"""The ``-f/--format`` and ``--pretty`` options of every ``inspect`` command.

Apart from ``inspect_cmd`` so that the commands declaring them (``service inspect``, ``node
inspect``, ``swarm inspect``) do not import protobuf, Docker's shapes and the Go template
engine when the CLI starts for another command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

FORMAT_HELP = "Format output using a Go template, e.g. '{{.Spec.Name}}' or '{{json .Spec}}'."


def inspect_options(kind: str, *, pretty: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-f/--format`` (and ``--pretty``) on a ``KIND inspect`` command."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option("-f", "--format", "fmt", default=None, help=FORMAT_HELP)(func)
        if pretty:
            func = click.option(
                "--pretty", is_flag=True, help="Print the information in a human friendly format."
            )(func)
        return func

    return decorate
