"""Compose's ``${VAR}`` substitution, applied to every string of a file before it is checked.

Forms (as docker compose): ``$VAR``, ``${VAR}``, ``${VAR:-default}`` (unset or empty),
``${VAR-default}`` (unset), ``${VAR:?message}``/``${VAR?message}`` (an error), ``$$`` for a
literal ``$``. An unset variable without a default becomes an empty string, as in docker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>" + _NAME + r")|\{(?P<braced>" + _NAME + r")"
    r"(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}|(?P<invalid>))"
)


class InterpolationError(ValueError):
    """A ``${...}`` that cannot be substituted; the message says which and why."""


def substitute(text: str, env: Mapping[str, str]) -> str:
    """``text`` with its variables replaced from ``env``."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("bare") or match.group("braced")
        if name is None:
            raise InterpolationError(f'invalid interpolation format in "{text}": use $$ for a literal $')
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else substitute(arg, env)
        if op == "-":
            return value if value is not None else substitute(arg, env)
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise InterpolationError(f"required variable {name} is missing a value: {arg or 'not set'}")
        return value or ""

    return _PATTERN.sub(replace, text)


def interpolate(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Every string in ``value`` (a loaded YAML document) substituted; keys are left alone.
    An error names where in the document it happened."""
    if isinstance(value, str):
        try:
            return substitute(value, env)
        except InterpolationError as exc:
            raise InterpolationError(f"{path or '(root)'}: {exc}") from None
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value
