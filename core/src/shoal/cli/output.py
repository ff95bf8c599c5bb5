"""Printing lists the way docker does: aligned tables, JSON lines, IDs only, or a template."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from shoal.cli.errors import fail

_FIELD = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z0-9_]*)\s*\}\}")
_ACTION = re.compile(r"\s*(json\s+)?\.([A-Za-z0-9_]*)\s*\Z")
PADDING = 3


def human_duration(seconds: float) -> str:
    """docker's ``units.HumanDuration``: "Less than a second", "5 seconds", "About a minute"..."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = seconds / 60
    if minutes < 2:
        return "About a minute"
    if minutes < 60:
        return f"{int(minutes)} minutes"
    hours = minutes / 60
    if hours < 2:
        return "About an hour"
    if hours < 48:
        return f"{int(hours)} hours"
    if hours < 24 * 7 * 2:
        return f"{int(hours / 24)} days"
    if hours < 24 * 30 * 2:
        return f"{int(hours / 24 / 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{int(hours / 24 / 30)} months"
    return f"{int(hours / 24 / 365)} years"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded like Go's tabwriter with docker's settings (min width, 3 spaces)."""
    if rows and all(len(row) == len(headers) for row in rows):
        return _render_even_table(headers, rows)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        cells = [cell.ljust(widths[i] + PADDING) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def _render_even_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``render_table`` when every row has a cell per header (``service ps`` of 100,000 tasks
    took 1.3 s in the general loop): widths per column with ``max``, then one ``%`` format
    mapped over the rows (the cells are its arguments: a ``%`` in a cell is printed as is)."""
    columns = list(zip(tuple(headers), *rows, strict=True))
    line = "".join(f"%-{max(map(len, column)) + PADDING}s" for column in columns[:-1]) + "%s"
    return "\n".join(map(str.rstrip, map(line.__mod__, [tuple(headers), *map(tuple, rows)])))


def check_template(template: str, fields: Sequence[str]) -> None:
    """Refuse, in one line, a template this subset cannot run, as docker refuses one that does
    not parse or names a field its objects lack: an unclosed ``{{``, an action other than
    ``{{.Field}}``/``{{json .Field}}``/``{{json .}}``, or an unknown field."""
    shown = template if len(template) <= 80 else template[:77] + "..."
    pos = 0
    while (start := template.find("{{", pos)) != -1:
        end = template.find("}}", start + 2)
        if end == -1:
            fail(
                f'invalid --format "{shown}": template parsing error: unclosed action (a "{{{{" without "}}}}")'
            )
        action = template[start + 2 : end]
        match = _ACTION.match(action)
        if match is None:
            fail(
                f'invalid --format "{shown}": unsupported template action "{{{{{action}}}}}" '
                "(use {{.Field}} or {{json .Field}})"
            )
        name = match.group(2)
        if name and name not in fields:
            fail(f'invalid --format "{shown}": no field "{name}" (fields: {", ".join(fields)})')
        if not name and not match.group(1):
            fail(f'invalid --format "{shown}": use {{{{json .}}}} to print a whole object')
        pos = end + 2


def apply_template(template: str, item: dict[str, Any]) -> str:
    """A small subset of Go templates: ``{{.Field}}`` and ``{{json .}}`` / ``{{json .Field}}``."""

    def substitute(match: re.Match[str]) -> str:
        as_json, name = match.group(1), match.group(2)
        value = item if not name else item.get(name, "")
        if as_json:
            return json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    text = template.replace("\\t", "\t").replace("\\n", "\n")
    return _FIELD.sub(substitute, text)


def print_list(
    items: Sequence[dict[str, Any]],
    *,
    fmt: str | None,
    quiet: bool,
    headers: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[str]],
    json_keys: Sequence[str],
    id_of: Callable[[dict[str, Any]], str],
) -> None:
    """Print a list per ``-q`` / ``--format table|json|TEMPLATE``."""
    # One write per listing, not per line: 100,000 ``-q`` lines were 100,000 writes and flushes.
    if quiet:
        _echo_lines(id_of(item) for item in items)
        return
    if fmt in (None, "", "table"):
        click.echo(render_table(headers, [row(item) for item in items]))
        return
    if fmt == "json":
        _echo_lines(json.dumps({key: item.get(key, "") for key in json_keys}) for item in items)
        return
    if "{{" not in fmt:
        fail(f'invalid --format "{fmt}": use table, json or a template such as "{{{{.ID}}}}"')
    template = fmt
    check_template(template.removeprefix("table "), json_keys)
    if template.startswith("table "):
        template = template[len("table ") :]
        header_item = {key: key.upper() for key in json_keys}
        click.echo(apply_template(template, header_item))
    _echo_lines(apply_template(template, item) for item in items)


def _echo_lines(lines: Iterable[str]) -> None:
    """Each of ``lines`` on its own line, in one write (nothing at all for none)."""
    shown = list(lines)
    if shown:
        click.echo("\n".join(shown))
