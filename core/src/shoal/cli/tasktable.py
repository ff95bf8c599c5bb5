"""The task listings (``service ps``, ``node ps``, ``stack ps``): docker's rows, from the
manager's.

The CLI asks ``service.ps`` for compact rows (``compact``: lists of the manager's
``COMPACT_COLUMNS``, named in the reply's ``columns``), half the bytes of task dicts; a
daemon that predates them sends the dicts (``tasks``). Both are read into the same records, so
what is printed does not depend on which came. Of 100,000 tasks, the dicts' parse and the
dict-per-row table took 1.1 s of a 3.5 s ``service ps`` (issue 18 item 2): here a record is a
tuple taken by one ``itemgetter`` call, and the table's cells are tuples, not dicts.

``list_tasks`` asks for the rows in ``pieces`` too, written by the manager as it builds them,
and makes each piece's records as it arrives (``piecereader``), while the manager builds on.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

import click

from shoal.cli.common import INPUT_ERRORS, client
from shoal.cli.errors import fail
from shoal.cli.output import _echo_lines, human_duration, print_list, render_table
from shoal.cli.piecereader import call_in_pieces
from shoal.client import ClientError
from shoal.ids import SHORT_ID_LENGTH

#: The cells of a row, in order: the keys of ``--format json`` and of templates.
TASK_KEYS = ("ID", "Name", "Image", "Node", "DesiredState", "CurrentState", "Error", "Ports")
HEADERS = ("ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS")
#: The manager's fields a record is made of, in the order ``task_cells`` unpacks them.
_FIELDS = (
    "ServiceName",
    "Slot",
    "NodeID",
    "CreatedAt",
    "ID",
    "Image",
    "Node",
    "DesiredState",
    "State",
    "Timestamp",
    "Error",
    "Ports",
)
_Record = tuple[Any, ...]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic collector off while a task listing is fetched, read and printed. The
    reply's lists, the records and the cells make no reference cycles, but 100,000 rows of
    them set off full passes over all of them: a fifth of the CLI process's CPU (1.08 ->
    0.84 s in one run). A listing is the command's last work, and the collector is on again
    after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _records(result: dict[str, Any]) -> list[_Record]:
    """The reply's rows as tuples of ``_FIELDS``, compact rows or task dicts alike (or the
    ``records`` ``list_tasks`` made while reading)."""
    if "records" in result:
        made: list[_Record] = result["records"]
        return made
    if "rows" in result:
        return list(map(_picker(result["columns"]), result["rows"]))
    return list(map(itemgetter(*_FIELDS), result["tasks"]))


def _picker(columns: list[str]) -> itemgetter[Any]:
    """A compact row (of the reply's ``columns``) -> its record."""
    return itemgetter(*(columns.index(field) for field in _FIELDS))


def list_tasks(
    ctx: click.Context, params: dict[str, Any], *, quiet: bool, no_trunc: bool, fmt: str | None
) -> None:
    """``service ps``/``node ps``/``stack ps``: ``service.ps`` with ``params``, its compact rows
    asked for in pieces, each piece's records made as it arrives (the manager builds the next
    one meanwhile), then printed as ``print_tasks`` does; the collector paused throughout. A
    refusal: ``Error: <message>`` and a non-zero exit, as ``common.call``."""
    with collector_paused():
        records: list[_Record] = []
        picks: list[itemgetter[Any]] = []

        def take(head: dict[str, Any], rows: list[Any]) -> None:
            if not picks:
                picks.append(_picker(head["columns"]))
            records.extend(map(picks[0], rows))

        try:
            result = call_in_pieces(
                client(ctx), "service.ps", {**params, "compact": True, "pieces": True}, take
            )
        except ClientError as exc:
            fail(exc.message, 2 if exc.code in INPUT_ERRORS else 1)
        if picks:
            records.extend(map(picks[0], result["rows"]))
            result = {**result, "records": records}
        print_tasks(result, quiet=quiet, no_trunc=no_trunc, fmt=fmt)


def _sort(records: list[_Record]) -> None:
    """Newest task of each slot (or each node, for a global service) first: by service name,
    then slot (else node ID), then creation time, newest first, as stable sorts on C-level
    keys (one sort on a key tuple per record was 0.2 s of 100,000)."""
    records.sort(key=lambda r: float(r[3] or 0), reverse=True)  # reverse keeps ties in order
    if all(map(itemgetter(1), records)):  # replicated tasks only: slots, all numbers
        records.sort(key=itemgetter(1))
        records.sort(key=itemgetter(0))
    else:  # a global service's tasks: node IDs, compared within their service only
        records.sort(key=lambda r: (r[0], r[1] or r[2]))


def task_cells(result: dict[str, Any], no_trunc: bool) -> list[tuple[str, ...]]:
    """``service ps`` rows as ``TASK_KEYS`` cells: newest task of each slot first, then its
    history as ``\\_`` rows; IDs of 12 characters and errors of 30 unless ``no_trunc``."""
    now = float(result["now"])
    records = _records(result)
    _sort(records)
    cells: list[tuple[str, ...]] = []
    append = cells.append
    ago = human_duration
    cut = None if no_trunc else SHORT_ID_LENGTH
    previous_service: str | None = None
    previous_slot: Any = None
    for service, slot, node_id, _, task_id, image, node, desired, state, timestamp, error, ports in records:
        slot_id = slot or node_id
        if slot_id == previous_slot and service == previous_service:
            name = f" \\_ {service}.{slot_id}"
        else:
            name = f"{service}.{slot_id}"
            previous_service, previous_slot = service, slot_id
        if error:
            error = f'"{error[:29]}…"' if not no_trunc and len(error) > 30 else f'"{error}"'
        else:
            error = ""
        append(
            (
                task_id[:cut],
                name,
                image,
                node,
                desired,
                f"{state} {ago(now - float(timestamp or now))} ago",
                error,
                ports,
            )
        )
    return cells


def task_ids(result: dict[str, Any], no_trunc: bool) -> list[str]:
    """The IDs of ``task_cells``'s rows, in their order, without the other cells (``-q``: the
    ages, names and errors of 100,000 rows were 0.16 s of CPU for nothing)."""
    records = _records(result)
    _sort(records)
    cut = None if no_trunc else SHORT_ID_LENGTH
    return [task_id[:cut] for task_id in map(itemgetter(4), records)]


def task_rows(result: dict[str, Any], no_trunc: bool) -> list[dict[str, Any]]:
    """``task_cells`` as dicts of ``TASK_KEYS`` (what ``--format json`` and templates see)."""
    return [dict(zip(TASK_KEYS, cells, strict=True)) for cells in task_cells(result, no_trunc)]


def print_tasks(result: dict[str, Any], *, quiet: bool, no_trunc: bool, fmt: str | None) -> None:
    """Print per ``-q`` (12-character IDs too, unless ``--no-trunc``) / ``--format``; the table
    and ``-q`` straight from the cells, the other formats through ``print_list``."""
    if quiet:
        _echo_lines(task_ids(result, no_trunc))
        return
    cells = task_cells(result, no_trunc)
    if fmt in (None, "", "table"):
        click.echo(render_table(HEADERS, cells))
    else:
        print_list(
            [dict(zip(TASK_KEYS, row, strict=True)) for row in cells],
            fmt=fmt,
            quiet=False,
            headers=HEADERS,
            row=lambda r: tuple(str(r[k]) for k in TASK_KEYS),
            json_keys=TASK_KEYS,
            id_of=lambda r: str(r["ID"]),
        )
