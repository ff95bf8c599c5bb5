"""One-line CLI errors: what every shoal command prints when it cannot do what was asked.

A traceback tells an operator nothing they can act on; a single line naming what is wrong
(the plugin, the flag, the file) does. ``fail`` prints that line on stderr and exits with status
2; ``handle_errors`` wraps a click callback so that the kernel's known exception types end the
same way, while genuine bugs still show their traceback.
"""

from __future__ import annotations

import functools
import io
import os
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click

P = ParamSpec("P")
R = TypeVar("R")

#: Exit status of every failed command (click uses 2 for usage errors too).
EXIT_ERROR = 2

#: Exception types whose message is meant for the operator. Extend with ``register_error``.
#: ``shoal.loader.PluginError`` is added on first use, so that importing this module stays cheap.
KNOWN_ERRORS: list[type[Exception]] = [OSError]


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``Error: <message>`` as one line on stderr and exit with ``code``."""
    click.echo(f"Error: {one_line(message)}", err=True)
    sys.exit(code)


def one_line(message: object) -> str:
    """``message`` with every run of whitespace (newlines included) folded to one space."""
    return " ".join(str(message).split())


def describe(exc: BaseException) -> str:
    """The operator-facing text of a known exception."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        return f"{exc.strerror}: {where}" if where else exc.strerror
    return one_line(exc) or type(exc).__name__


def _quiet_broken_pipe() -> NoReturn:
    """The reader went away (``shoal ... | head``): stop quietly, as the Python docs advise."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a real file (tests): nothing will be flushed to a closed pipe
    sys.exit(1)


def register_error(exc_type: type[Exception]) -> type[Exception]:
    """Treat ``exc_type`` as operator-facing in ``handle_errors`` (usable as a class decorator)."""
    if exc_type not in KNOWN_ERRORS:
        KNOWN_ERRORS.append(exc_type)
    return exc_type


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Run a command callback; a known exception becomes ``fail(describe(exc))``.

    Put it under the click decorators (closest to the function). click's own exceptions
    (usage errors, ``Abort``, ``Exit``) pass through untouched.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from shoal.loader import PluginError

        register_error(PluginError)
        try:
            return func(*args, **kwargs)
        except click.exceptions.ClickException:
            raise
        except BrokenPipeError:
            _quiet_broken_pipe()
        except tuple(KNOWN_ERRORS) as exc:
            fail(describe(exc))

    return wrapper
