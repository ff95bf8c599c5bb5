"""Times of ``service logs``: ``--since`` values and ``--timestamps`` stamps, as docker has them.

``--since`` is read on the client (a relative value counts back from the client's clock, as
docker's does) and travels as seconds since the epoch; the node that reads a task's output drops
the lines older than that. Stamps are printed in docker's fixed-width RFC3339Nano form.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from shoal.specs import SpecError

#: A Go duration as docker's ``--since`` takes it: ``10m``, ``1h30m``, ``1.5h``, ``300ms``.
GO_DURATION = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h)")
UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
UNIX_TIME = re.compile(r"\d+(?:\.\d{1,9})?")
SINCE_HELP = 'use an RFC3339 time such as "2013-01-02T13:23:37Z", a Unix time, or a duration such as "42m"'


class SinceError(SpecError):
    """A ``--since`` value that is none of the forms docker accepts."""


def duration_seconds(text: str) -> float | None:
    """The seconds of a Go duration string, or None when ``text`` is not one."""
    pos, total = 0, 0.0
    while pos < len(text):
        match = GO_DURATION.match(text, pos)
        if match is None:
            return None
        number = re.match(r"[\d.]+", match.group(0))
        assert number is not None
        total += float(number.group(0)) * UNIT_SECONDS[match.group(0)[number.end() :]]
        pos = match.end()
    return total if text else None


def parse_since(value: str, now: float) -> float:
    """``--since`` as seconds since the epoch: a relative duration counts back from ``now``;
    a date or time without a zone is the client's local time (docker's rule)."""
    text = value.strip()
    if not text:
        raise SinceError(f'invalid --since "{value}": {SINCE_HELP}')
    if (seconds := duration_seconds(text)) is not None:
        return now - seconds
    if UNIX_TIME.fullmatch(text):
        return float(text)
    iso = text.replace("z", "Z")
    # fromisoformat takes at most 6 fraction digits; RFC3339Nano has up to 9.
    iso = re.sub(r"(\.\d{6})\d{1,3}", r"\1", iso)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}(Z|[+-]\d{2}:\d{2})", iso):  # docker's 2006-01-02Z07:00
        iso = iso[:10] + "T00:00:00" + iso[10:]
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise SinceError(f'invalid --since "{value}": {SINCE_HELP}') from None
    return when.timestamp()  # naive: local time


def since_param(value: Any) -> float:
    """The ``since`` of a local API call (seconds since the epoch, the CLI computed it): absent
    or 0 means every line."""
    if value is None or value == "":
        return 0.0
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SinceError(f'invalid since "{value}": give seconds since the epoch') from None
    if not math.isfinite(seconds) or seconds < 0:
        raise SinceError(f'invalid since "{value}": give seconds since the epoch')
    return seconds


def rfc3339_nano(timestamp: float) -> str:
    """``2014-09-16T06:17:46.000000000Z``: nine fraction digits, so stamps line up (docker's)."""
    # A double holds an epoch time to about a microsecond: the last three digits are zeros.
    micros = round(timestamp * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:06d}000Z"
