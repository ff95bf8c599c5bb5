"""Parsing JSON that comes from outside the process, with a size and a nesting cap.

The local API and the forwarded control calls take JSON from whoever can open the socket or
holds a manager certificate. ``json.loads`` alone would take any size (the caller must cap what
it reads) and raises ``RecursionError`` — not a ``ValueError`` — for deeply nested input, which
escaped the servers' error handling as a traceback. Every real request is a few levels deep, so
anything deeper than ``MAX_DEPTH`` is refused with a line saying so.
"""

from __future__ import annotations

import json
from typing import Any

#: Largest request accepted (the gRPC default message size: what a forwarded call can carry).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted; real requests use fewer than 6 levels.
MAX_DEPTH = 32


class BadJSON(ValueError):
    """A request that is not acceptable JSON; the message says why, in one line."""


def too_large_message(limit: int = MAX_REQUEST_BYTES) -> str:
    size = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"
    return f"request too large: requests are limited to {size}"


def loads(data: bytes | str, *, max_bytes: int = MAX_REQUEST_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``BadJSON`` for oversized, malformed or too deeply nested input."""
    if len(data) > max_bytes:
        raise BadJSON(too_large_message(max_bytes))
    try:
        value = json.loads(data)
    except RecursionError:
        raise BadJSON(_too_deep(max_depth)) from None
    except ValueError as exc:  # JSONDecodeError and undecodable bytes
        raise BadJSON(f"malformed request: not JSON ({exc})") from None
    if depth_exceeds(value, max_depth):
        raise BadJSON(_too_deep(max_depth))
    return value


def depth_exceeds(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``max_depth`` levels (iteratively: a
    recursive walk would hit the very limit it checks for)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _too_deep(max_depth: int) -> str:
    return f"request nested too deeply: at most {max_depth} levels of arrays and objects are accepted"
