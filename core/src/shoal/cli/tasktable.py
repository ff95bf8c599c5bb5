"""The task listings (``service ps``, ``node ps``, ``stack ps``): docker's rows, from the
manager's.

The CLI asks ``service.ps`` for compact rows (``compact``: lists of the manager's
``COMPACT_COLUMNS``, named in the reply's ``columns``), half the bytes of task dicts; a
daemon that predates them sends the dicts (``tasks``). Both are read into the same records, so
what is printed does not depend on which came. Of 100,000 tasks, the dicts' parse and the
dict-per-row table took 1.1 s of a 3.5 s ``service ps`` (issue 18 item 2): here a record is a
tuple taken by one ``itemgetter`` call, and the table's cells are tuples, not dicts.

``list_tasks`` asks for the rows in ``pieces`` too, written by the manager as it builds them,
and makes each piece's cells as it arrives (``piecereader``), while the manager builds on.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

import click

from shoal.cli.common import INPUT_ERRORS, client
from shoal.cli.errors import fail
from shoal.cli.output import PADDING, _echo_lines, human_duration, print_list, render_table
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
    """``service ps``/``node ps``: ``service.ps`` with ``params``, its compact rows asked for in
    pieces and each piece's cells (``_Reading``) made as it arrives, while the manager builds
    the next; then printed as ``print_tasks`` does, the collector paused throughout. A
    refusal: ``Error: <message>`` and a non-zero exit, as ``common.call``."""
    with collector_paused():
        reading = _Reading(quiet=quiet, no_trunc=no_trunc)
        try:
            result = call_in_pieces(
                client(ctx), "service.ps", {**params, "compact": True, "pieces": True}, reading.take
            )
        except ClientError as exc:
            fail(exc.message, 2 if exc.code in INPUT_ERRORS else 1)
        result = reading.result(result)
        if fmt in (None, "", "table") and reading.widths is not None and result.get("keyed"):
            click.echo(_table_of_keyed(result["keyed"], reading.widths))
        else:
            print_tasks(result, quiet=quiet, no_trunc=no_trunc, fmt=fmt)


class _Reading:
    """The records, or with the reply's ``now`` in its head the keyed cells (``_keyed_cells``)
    and the table's widths (``_Widths``), of the pieces of a reply as they arrive: all of a
    row's work but the sort, the history mark and the formatting is done while the manager
    builds the next piece (100,000 rows: the CLI's work after the last piece 0.42-0.5 ->
    0.23-0.3 s of CPU, 0.6-0.67 s for a reply read whole; issue 18 item 2)."""

    def __init__(self, *, quiet: bool, no_trunc: bool) -> None:
        self._quiet = quiet
        self._no_trunc = no_trunc
        self._pick: itemgetter[Any] | None = None
        #: The reply's clock, when its head has it (``-q`` needs no cells).
        self._now: float | None = None
        self._records: list[_Record] = []
        self._keyed: list[_Keyed] = []
        #: The table's widths so far, with the keyed cells (``_Widths``).
        self.widths: _Widths | None = None

    def take(self, head: dict[str, Any], rows: list[Any]) -> None:
        if self._pick is None:
            self._pick = _picker(head["columns"])
            now = head.get("now")
            self._now = None if self._quiet or now is None else float(now)
            self.widths = None if self._now is None else _Widths()
        if self._now is None:
            self._records.extend(map(self._pick, rows))
        else:
            keyed = _keyed_cells(map(self._pick, rows), self._now, self._no_trunc)
            self._keyed += keyed
            assert self.widths is not None
            self.widths.take(keyed)

    def result(self, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` (the reply's, its rows those after the last piece) with what was made of
        the pieces: ``print_tasks`` takes it as it takes a reply."""
        if self._pick is None:  # no pieces: a reply written whole
            return result
        self.take(result, result["rows"])
        if self._now is None:
            return {**result, "records": self._records}
        return {**result, "keyed": self._keyed, "keyed_no_trunc": self._no_trunc}


class _Widths:
    """The table's column widths over keyed cells taken a piece at a time, as the rows arrive
    (``render_table`` finds them in passes over all the cells, after they are sorted: in
    sorted order they are read all over memory, 0.1 s more for 100,000 rows than in the order
    they were made). A name is marked ``\\_`` (4 characters more) on every row of its slot
    (or node) but the newest, so the longest name of a slot with more than one row counts
    with the mark."""

    def __init__(self) -> None:
        self._widths = [len(header) for header in HEADERS]
        #: Rows per (service, slot or node ID).
        self._slots: dict[tuple[Any, Any], int] = {}

    def take(self, keyed: list[_Keyed]) -> None:
        widths = self._widths
        for index, column in enumerate(zip(*map(itemgetter(4), keyed), strict=True)):
            widest = max(map(len, column))
            if widest > widths[index]:
                widths[index] = widest
        slots = self._slots
        for key in [(service, slot or node_id) for service, slot, node_id, _, _ in keyed]:
            slots[key] = slots.get(key, 0) + 1

    def final(self) -> list[int]:
        """The widths once every row is taken."""
        widths = list(self._widths)
        for (service, slot_id), rows in self._slots.items():
            if rows > 1:
                widths[1] = max(widths[1], len(f"{service}.{slot_id}") + 4)
        return widths


def _table_of_keyed(keyed: list[_Keyed], widths: _Widths) -> str:
    """``render_table(HEADERS, task_cells(...))`` of keyed cells whose widths were taken as
    they came: sorted, then each row marked and formatted in one pass (the same ``%`` format
    of the same widths: Go's tabwriter, docker's padding)."""
    _sort(keyed, _KEYED_CREATED)
    line = "".join(f"%-{width + PADDING}s" for width in widths.final()[:-1]) + "%s"
    return "\n".join(map(str.rstrip, map(line.__mod__, [HEADERS, *_marked(keyed)])))


def _created(record: _Record) -> float:
    return float(record[3] or 0)


def _sort(records: list[Any], created: Callable[[Any], float] = _created) -> None:
    """Newest task of each slot (or each node, for a global service) first: by service name,
    then slot (else node ID), then creation time (``created``: a record's, as a number),
    newest first, as stable sorts on C-level keys (one sort on a key tuple per record was
    0.2 s of 100,000)."""
    records.sort(key=created, reverse=True)  # reverse keeps ties in order
    if all(map(itemgetter(1), records)):  # replicated tasks only: slots, all numbers
        records.sort(key=itemgetter(1))
        records.sort(key=itemgetter(0))
    else:  # a global service's tasks: node IDs, compared within their service only
        records.sort(key=lambda r: (r[0], r[1] or r[2]))


#: A record's sort keys (``_sort``'s: service name, slot, node ID, creation time as a number:
#: ``_sort(keyed, _KEYED_CREATED)``) and its cells, a history row's name not yet marked (that
#: needs the sorted order).
_Keyed = tuple[Any, Any, Any, Any, tuple[str, ...]]


def _keyed_cells(records: Iterable[_Record], now: float, no_trunc: bool) -> list[_Keyed]:
    """Each record's ``TASK_KEYS`` cells, keyed for ``_sort``: IDs of 12 characters and
    errors of 30 unless ``no_trunc``, the ages from ``now``."""
    keyed: list[_Keyed] = []
    append = keyed.append
    ago = human_duration
    cut = None if no_trunc else SHORT_ID_LENGTH
    for (
        service,
        slot,
        node_id,
        created,
        task_id,
        image,
        node,
        desired,
        state,
        timestamp,
        error,
        ports,
    ) in records:
        if error:
            error = f'"{error[:29]}…"' if not no_trunc and len(error) > 30 else f'"{error}"'
        else:
            error = ""
        cells = (
            task_id[:cut],
            f"{service}.{slot or node_id}",
            image,
            node,
            desired,
            f"{state} {ago(now - float(timestamp or now))} ago",
            error,
            ports,
        )
        append((service, slot, node_id, float(created or 0), cells))
    return keyed


_KEYED_CREATED = itemgetter(3)


def _marked(keyed: list[_Keyed]) -> Iterator[tuple[str, ...]]:
    """The cells of sorted ``keyed``, the name of each row after the first of its slot (or
    node) marked ``\\_`` (its history)."""
    previous_service: str | None = None
    previous_slot: Any = None
    for service, slot, node_id, _, cells in keyed:
        slot_id = slot or node_id
        if slot_id == previous_slot and service == previous_service:
            yield (cells[0], " \\_ " + cells[1], *cells[2:])
        else:
            previous_service, previous_slot = service, slot_id
            yield cells


def task_cells(result: dict[str, Any], no_trunc: bool) -> list[tuple[str, ...]]:
    """``service ps`` rows as ``TASK_KEYS`` cells: newest task of each slot first, then its
    history as ``\\_`` rows; IDs of 12 characters and errors of 30 unless ``no_trunc`` (from
    the ``keyed`` cells ``list_tasks`` made while reading, or from the reply's rows)."""
    keyed: list[_Keyed] | None = result.get("keyed")
    if keyed is None or result.get("keyed_no_trunc") is not no_trunc:
        keyed = _keyed_cells(_records(result), float(result["now"]), no_trunc)
    _sort(keyed, _KEYED_CREATED)
    return list(_marked(keyed))


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
