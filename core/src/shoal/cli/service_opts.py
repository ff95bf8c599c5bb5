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

from shoal.cli.service_flags import (
    BOOLEANS,
    BOTH_LISTS,
    CREATE_LISTS,
    FALSE,
    SCALARS,
    TRUE,
    UPDATE_LISTS,
)
from shoal.cli.service_flags import params_of as params_of  # where callers found it

F = TypeVar("F", bound=Callable[..., Any])


def _apply(func: F, decorators: list[Callable[[F], F]]) -> F:
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def common_options(func: F) -> F:
    """Flags that mean the same on create and update."""
    decorators: list[Callable[[F], F]] = [
        click.option(*flags, **{"default": None, **opts}) for flags, opts in SCALARS
    ]
    decorators += [click.option(*flags, default=None, help=text) for flags, text in BOOLEANS]
    decorators += [click.option(*flags, dest, multiple=True, help=text) for flags, dest, text in BOTH_LISTS]
    return _apply(func, decorators)


def create_options(func: F) -> F:
    """``service create``'s list flags."""
    return _apply(
        func, [click.option(*flags, dest, multiple=True, help=text) for flags, dest, text in CREATE_LISTS]
    )


def update_options(func: F) -> F:
    """``service update``'s ``-add``/``-rm`` flags."""
    decorators: list[Callable[[F], F]] = []
    for flag, dest, what in UPDATE_LISTS:
        decorators.append(
            click.option(f"--{flag}-add", f"{dest}_add", multiple=True, help=f"Add or update {what}.")
        )
        decorators.append(click.option(f"--{flag}-rm", f"{dest}_rm", multiple=True, help=f"Remove {what}."))
    return _apply(func, decorators)


class _DockerFlagsParser(_OptionParser):
    """Click's parser, taking docker's ``--read-only=false`` form of a boolean flag (pflag's):
    ``=true`` is the bare flag and ``=false`` its ``--no-`` twin."""

    def _match_long_opt(self, opt: str, explicit_value: str | None, state: Any) -> None:
        if opt not in self._long_opt and opt[:2] not in self._opt_prefixes:
            # ``-d``: click tries every short flag as a long one first, and builds the refusal's
            # "did you mean" list (importing difflib) only to drop it and match ``-d`` as short.
            raise click.NoSuchOption(opt, ctx=self.ctx)
        if explicit_value is not None and f"--no-{opt[2:]}" in self._long_opt:
            if explicit_value in FALSE:
                opt, explicit_value = f"--no-{opt[2:]}", None
            elif explicit_value in TRUE:
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
