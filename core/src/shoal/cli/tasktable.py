"""The task listings (``service ps``, ``node ps``, ``stack ps``): docker's rows, from the
manager's.

The CLI asks ``service.ps`` for compact rows (``compact``: lists of the manager's
``COMPACT_COLUMNS``, named in the reply's ``columns``), half the bytes of task dicts; a
daemon that predates them sends the dicts (``tasks``). Both are read into the same columns, so
what is printed does not depend on which came.

``list_tasks`` asks for the rows in ``pieces`` too, written by the manager as it builds them,
and makes each piece's cells as it arrives (``piecereader``), while the manager builds on.

The rows are kept as columns (``_Columns``), not as a tuple per row: each piece is turned
around once (``zip``) and its cells made a column at a time by C-level calls (``map``,
``bisect``), the repeated values (images, nodes, states, ages) one shared object each. Of
100,000 rows, the per-row loop, its tuples and ``human_duration`` calls were ~0.3 s of the
CLI's ~0.7 s of CPU (issue 18 item 2); the ages are looked up in a table of docker's steps
(``_age_steps``), the rows are sorted only when they are not already in order, and the table is
written in blocks, not as one 15 MB string copied three times.
"""

from __future__ import annotations

import functools
import gc
import math
import sys
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, compress, islice, repeat
from operator import and_, eq, getitem, itemgetter, lt, ne
from typing import Any

import click

from shoal.cli.common import INPUT_ERRORS, client
from shoal.cli.errors import fail
from shoal.cli.output import PADDING, _echo_lines, human_duration, print_list
from shoal.cli.piecereader import call_in_pieces
from shoal.client import ClientError
from shoal.ids import SHORT_ID_LENGTH

#: The cells of a row, in order: the keys of ``--format json`` and of templates.
TASK_KEYS = ("ID", "Name", "Image", "Node", "DesiredState", "CurrentState", "Error", "Ports")
HEADERS = ("ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS")
#: The manager's fields a listing is made of, in the order ``_Columns.take`` unpacks them.
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
#: Lines of the table per write: the whole table as one string was built, then copied by
#: ``click.echo`` (the newline) and encoded, ~45 MB of a 100,000-row listing's peak memory. A
#: block of 1,024 lines (~150 KB) is made in the memory the previous one freed; blocks of 8,192
#: (1.2 MB strings, over glibc's mmap threshold) were mapped and faulted in afresh each time:
#: 12,000 page faults, 0.075 -> 0.050 s of CPU for the writing.
_BLOCK = 1024
#: Rows taken at a time from a reply read whole, as the manager's pieces are.
_PIECE = 1000
#: A task ID's first characters (``SHORT_ID_LENGTH``), as a slice.
_SHORT = slice(None, SHORT_ID_LENGTH)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic collector off while a task listing is fetched, read and printed. The
    reply's lists and the cells make no reference cycles, but 100,000 rows of them set off
    full passes over all of them: a fifth of the CLI process's CPU (1.08 -> 0.84 s in one
    run). A listing is the command's last work, and the collector is on again after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            _forget_young_objects()
            gc.enable()


def _forget_young_objects() -> None:
    """Move what was made while the collector was off out of its young generation: its count
    went on growing, so the first allocation after ``gc.enable()`` ran a collection over every
    container made since (a 100,000-row listing: ~300,000, 0.05 s of CPU) that finds nothing
    (they are freed by their counts). Freezing and unfreezing puts them in the oldest
    generation, in constant time; not done when the process keeps frozen objects of its own
    (``unfreeze`` would release those too)."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


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
        print_tasks(reading.result(result), quiet=quiet, no_trunc=no_trunc, fmt=fmt)


class _Reading:
    """The columns (``_Columns``) of the pieces of a reply as they arrive: with the reply's
    ``now`` in its head, all of a row's work but the sort, the history mark and the formatting
    is done while the manager builds the next piece (``-q``: the IDs and sort keys only)."""

    def __init__(self, *, quiet: bool, no_trunc: bool) -> None:
        self._quiet = quiet
        self._no_trunc = no_trunc
        self._fields: list[int] | None = None
        #: The listing so far; ``None`` before the first piece, or while ``now`` is not known.
        self.columns: _Columns | None = None
        #: Rows kept as they came, for a head without ``now`` (its cells need it).
        self._rows: list[Any] = []

    def take(self, head: dict[str, Any], rows: list[Any]) -> None:
        if self._fields is None:
            self._fields = _field_indexes(head["columns"])
            now = head.get("now")
            if self._quiet:
                self.columns = _Columns(None, self._no_trunc)
            elif now is not None:
                self.columns = _Columns(float(now), self._no_trunc)
        if self.columns is None:
            self._rows += rows
        else:
            self.columns.take(_transposed(rows, self._fields))

    def result(self, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` (the reply's, its rows those after the last piece) with what was made of
        the pieces: ``print_tasks`` takes it as it takes a reply."""
        if self._fields is None:  # no pieces: a reply written whole
            return result
        rows = result["rows"]
        if self.columns is None:
            return {**result, "rows": [*self._rows, *rows]}
        self.take(result, rows)
        return {**result, "listing": self.columns}


def _field_indexes(columns: list[str]) -> list[int]:
    """Where each of ``_FIELDS`` is in a compact row of the reply's ``columns``."""
    return [columns.index(field) for field in _FIELDS]


def _transposed(rows: list[Any], fields: list[int]) -> list[Sequence[Any]]:
    """Compact rows as ``_FIELDS`` columns (``[]`` for no rows): one ``zip`` of the piece
    instead of a tuple per row. A row too short for a field is refused as picking it from the
    row refused it (``IndexError``)."""
    if not rows:
        return []
    turned = list(zip(*rows, strict=False))  # (as short as the shortest row)
    if len(turned) <= max(fields):
        return list(zip(*map(itemgetter(*fields), rows), strict=True))  # (raises, as picking did)
    return [turned[index] for index in fields]


def _columns_of(result: dict[str, Any], no_trunc: bool, quiet: bool) -> _Columns:
    """The ``_Columns`` of a reply: the ones ``list_tasks`` made while reading, or the reply's
    compact rows or task dicts taken whole."""
    listing: _Columns | None = result.get("listing")
    if listing is not None and listing.no_trunc is no_trunc and (quiet or listing.now is not None):
        return listing
    columns = _Columns(None if quiet else float(result["now"]), no_trunc)
    if "rows" in result:
        rows, fields = result["rows"], _field_indexes(result["columns"])
    else:
        rows, fields = list(map(itemgetter(*_FIELDS), result["tasks"])), list(range(len(_FIELDS)))
    for start in range(0, len(rows), _PIECE):  # (one zip of 100,000 rows is 4x slower)
        columns.take(_transposed(rows[start : start + _PIECE], fields))
    return columns


#: Ages past this (and ``nan``) are worked out by ``human_duration`` (``_age_steps``).
_AGE_TABLE_LIMIT = 10 * 365 * 86400


@functools.cache
def _age_steps() -> tuple[list[float], list[str | None]] | None:
    """``human_duration`` of a row's age as a table of its steps, made and checked once per
    process (~0.5 ms): (the steps' starts, each step's text: ``[0]`` before the first start,
    ``None`` past ``_AGE_TABLE_LIMIT``); the age's place among the starts (``bisect``, a C call)
    picks its text. docker's ages change only at whole seconds (a second, a minute, an hour...
    each a whole number of seconds), and the table is checked against ``human_duration`` itself
    at both ends of every step (its texts only grow with the age, so a step that starts and ends
    with one text has it throughout): ``None`` if the check fails, and every age is then worked
    out by ``human_duration``."""
    day = 86400
    points = sorted(
        {
            *range(1, 60),
            *range(60, 3600, 60),
            *range(3600, 2 * day, 3600),
            *range(2 * day, 14 * day, day),
            *range(14 * day, 60 * day, 7 * day),
            *range(60 * day, 730 * day, 30 * day),
            *range(730 * day, _AGE_TABLE_LIMIT, 365 * day),
        }
    )
    starts: list[float] = []
    texts: list[str | None] = [human_duration(0.0)]
    for point in points:
        text = human_duration(float(point))
        if text != texts[-1]:
            starts.append(float(point))
            texts.append(text)
    ends = [*starts, float(_AGE_TABLE_LIMIT)]
    for index, end in enumerate(ends):
        if human_duration(math.nextafter(end, 0.0)) != texts[index]:
            return None
        if index < len(starts) and human_duration(end) != texts[index + 1]:
            return None
    starts.append(float(_AGE_TABLE_LIMIT))
    texts.append(None)
    return starts, texts


def _ages(ages: Iterable[float]) -> list[str]:
    """``human_duration`` of each of ``ages``."""
    table = _age_steps()
    if table is None:
        return list(map(human_duration, ages))
    starts, texts = table
    ages = list(ages)
    found: list[Any] = list(map(texts.__getitem__, map(bisect_right, repeat(starts), ages)))
    if None in found:  # past the table (or nan)
        found = [human_duration(age) if text is None else text for age, text in zip(ages, found, strict=True)]
    return found


class _Columns:
    """A listing's sort keys and (unless ``-q``: ``now`` None) its ``TASK_KEYS`` cells, as
    columns, a piece at a time; the table's widths with them (``render_table``'s, found in
    passes over every cell after the sort: in sorted order the cells were read all over memory,
    0.1 s more for 100,000 rows). IDs of 12 characters and errors of 30 unless ``no_trunc``,
    the ages from ``now``."""

    def __init__(self, now: float | None, no_trunc: bool) -> None:
        self.now = now
        self.no_trunc = no_trunc
        self.services: list[Any] = []
        self.slots: list[Any] = []
        self.node_ids: list[Any] = []
        self.created: list[float] = []
        #: A column per ``HEADERS`` (only the IDs for ``-q``); a history row's name not yet
        #: marked (that needs the sorted order).
        self.cells: list[list[Any]] = [[] for _ in HEADERS]
        self.widths = [len(header) for header in HEADERS]
        #: The text of each (state, age text) seen: one object per distinct cell.
        self._current: dict[Any, dict[str, str]] = {}

    def take(self, fields: list[Sequence[Any]]) -> None:
        """One piece: its ``_FIELDS`` columns (``[]``: no rows)."""
        if not fields:
            return
        (services, slots, node_ids, created, ids, images, nodes, desired, states, stamps, errors, ports) = (
            fields
        )
        count = len(ids)
        self.services += _shared(services)
        self.slots += slots
        every_slot = all(slots)
        # (a node's ID names a task only without a slot: a global service's)
        self.node_ids += repeat(None, count) if every_slot else node_ids
        self.created += map(float, created) if all(created) else [float(c or 0) for c in created]
        if not self.no_trunc:
            ids = list(map(getitem, ids, repeat(_SHORT)))
        if self.now is None:
            self.cells[0] += ids
            return
        if every_slot and services.count(services[0]) == count:
            names = list(map(f"{services[0]}.".__add__, map(str, slots)))
        else:
            names = [
                f"{service}.{slot or node_id}"
                for service, slot, node_id in zip(services, slots, node_ids, strict=True)
            ]
        piece = (
            ids,
            names,
            _shared(images),
            _shared(nodes),
            _shared(desired),
            self._current_states(states, stamps),
            self._errors(errors),
            _shared(ports),
        )
        widths = self.widths
        for index, (column, cells) in enumerate(zip(piece, self.cells, strict=True)):
            cells += column
            first = column[0]
            # (one object in every row, as the shared texts often are: one length to read)
            widest = len(first) if column.count(first) == count else max(map(len, column))
            if widest > widths[index]:
                widths[index] = widest

    def _current_states(self, states: Sequence[Any], stamps: Sequence[Any]) -> list[str]:
        """``"<state> <age> ago"`` of each row, each distinct text made once."""
        now = self.now
        assert now is not None
        if all(stamps):
            ages = _ages(map(now.__sub__, map(float, stamps)))
        else:
            ages = _ages([now - float(stamp or now) for stamp in stamps])
        try:
            states = list(map(sys.intern, states))
        except TypeError:  # (not texts): made row by row
            return [f"{state} {age} ago" for state, age in zip(states, ages, strict=True)]
        known = self._current
        kinds = set(states)
        state = max(kinds, key=states.count) if len(kinds) > 1 else states[0]
        texts = known.setdefault(state, {})
        for age in set(ages).difference(texts):
            texts[age] = f"{state} {age} ago"
        found = list(map(texts.__getitem__, ages))  # as if every row had the commonest state
        if len(kinds) > 1:
            for index in compress(range(len(states)), map(ne, states, repeat(state))):
                other, age = states[index], ages[index]
                texts = known.setdefault(other, {})
                found[index] = texts.get(age) or texts.setdefault(age, f"{other} {age} ago")
        return found

    def _errors(self, errors: Sequence[Any]) -> Sequence[str]:
        if not any(errors):
            return ("",) * len(errors)
        if self.no_trunc:
            return [f'"{error}"' if error else "" for error in errors]
        return [
            (f'"{error[:29]}…"' if len(error) > 30 else f'"{error}"') if error else "" for error in errors
        ]

    def sorted(self) -> tuple[list[list[Any]], list[int]]:
        """The cells (the IDs alone for ``-q``) in docker's order, newest task of each slot
        first, its history after it with its name marked ``\\_``; and the widths the table
        needs (a marked name 4 characters wider)."""
        columns = self.cells if self.now is not None else self.cells[:1]
        services, slot_ids = self.services, self._slot_ids()
        order = self._order(slot_ids)
        if order is not None:
            pick = [column.__getitem__ for column in (*columns, services, slot_ids)]
            *columns, services, slot_ids = [list(map(take, order)) for take in pick]
        widths = list(self.widths)
        if self.now is not None:
            history = list(
                map(
                    and_,
                    map(eq, slot_ids, chain((None,), slot_ids)),
                    map(eq, services, chain((None,), services)),
                )
            )
            if any(history):
                names = columns[1]
                marked = [" \\_ " + name for name in compress(names, history)]
                widths[1] = max(widths[1], *map(len, marked))
                into = iter(marked)
                columns[1] = [next(into) if old else name for name, old in zip(names, history, strict=True)]
        return columns, widths

    def _slot_ids(self) -> list[Any]:
        """Each row's slot, else (a global service's task) its node's ID."""
        if all(self.slots):
            return self.slots
        return [slot or node_id for slot, node_id in zip(self.slots, self.node_ids, strict=True)]

    def _order(self, slot_ids: list[Any]) -> list[int] | None:
        """The rows' places in docker's order (by service name, then slot, else node ID, then
        creation time, newest first), or ``None`` when they are in it already: one service's
        tasks, one a slot, come by slot from the manager (``tasklist.in_slot_order``), a check
        of ~5 ms instead of three sorts. Otherwise stable sorts on C-level keys (one sort on a
        key tuple per row was 0.2 s of 100,000)."""
        services, slots = self.services, self.slots
        if self._in_order(slot_ids):
            return None
        order = sorted(range(len(services)), key=self.created.__getitem__, reverse=True)
        if slot_ids is slots:  # replicated tasks only: slots, all numbers
            order.sort(key=slots.__getitem__)
            order.sort(key=services.__getitem__)
        else:  # a global service's tasks: node IDs, compared within their service only
            order.sort(key=lambda index: (services[index], slot_ids[index]))
        return order

    def _in_order(self, slot_ids: list[Any]) -> bool:
        services = self.services
        if slot_ids is not self.slots or not services or services.count(services[0]) != len(services):
            return False
        try:
            return all(map(lt, slot_ids, islice(slot_ids, 1, None)))
        except TypeError:  # (not numbers: sorted, which refuses them as before)
            return False


def _shared(values: Sequence[Any]) -> Sequence[Any]:
    """``values`` with each distinct text one object: a listing's images, nodes and states
    repeat, and each row's own copies were ~250 bytes a row kept until the end (100,000 rows:
    25 MB, their page faults and their freeing). A piece's column of one text (a service's
    image, its desired state, no ports) is that text repeated, else each text is interned."""
    if values and type(values[0]) is str and values.count(values[0]) == len(values):
        return [values[0]] * len(values)
    try:
        return list(map(sys.intern, values))
    except TypeError:  # (not texts)
        return values


def task_cells(result: dict[str, Any], no_trunc: bool) -> list[tuple[str, ...]]:
    """``service ps`` rows as ``TASK_KEYS`` cells: newest task of each slot first, then its
    history as ``\\_`` rows; IDs of 12 characters and errors of 30 unless ``no_trunc`` (from
    the columns ``list_tasks`` made while reading, or from the reply's rows)."""
    columns, _ = _columns_of(result, no_trunc, quiet=False).sorted()
    return list(zip(*columns, strict=True))


def task_ids(result: dict[str, Any], no_trunc: bool) -> list[str]:
    """The IDs of ``task_cells``'s rows, in their order, without the other cells (``-q``: the
    ages, names and errors of 100,000 rows were 0.16 s of CPU for nothing)."""
    columns, _ = _columns_of(result, no_trunc, quiet=True).sorted()
    return columns[0]


def task_rows(result: dict[str, Any], no_trunc: bool) -> list[dict[str, Any]]:
    """``task_cells`` as dicts of ``TASK_KEYS`` (what ``--format json`` and templates see)."""
    return [dict(zip(TASK_KEYS, cells, strict=True)) for cells in task_cells(result, no_trunc)]


def _echo_table(columns: list[list[Any]], widths: list[int]) -> None:
    """``render_table(HEADERS, rows)`` of the sorted columns, written ``_BLOCK`` lines at a
    time: the same ``%`` format of the same widths (Go's tabwriter, docker's padding), each
    line stripped at its end, and the same bytes as one ``click.echo`` of the whole."""
    line = "".join(f"%-{width + PADDING}s" for width in widths[:-1]) + "%s"
    lines = map(str.rstrip, map(line.__mod__, chain((HEADERS,), zip(*columns, strict=True))))
    while block := list(islice(lines, _BLOCK)):
        click.echo("\n".join(block))


def print_tasks(result: dict[str, Any], *, quiet: bool, no_trunc: bool, fmt: str | None) -> None:
    """Print per ``-q`` (12-character IDs too, unless ``--no-trunc``) / ``--format``; the table
    and ``-q`` straight from the cells, the other formats through ``print_list``."""
    if quiet:
        _echo_lines(task_ids(result, no_trunc))
        return
    columns, widths = _columns_of(result, no_trunc, quiet=False).sorted()
    if fmt in (None, "", "table"):
        _echo_table(columns, widths)
    else:
        print_list(
            [dict(zip(TASK_KEYS, row, strict=True)) for row in zip(*columns, strict=True)],
            fmt=fmt,
            quiet=False,
            headers=HEADERS,
            row=lambda r: tuple(str(r[k]) for k in TASK_KEYS),
            json_keys=TASK_KEYS,
            id_of=lambda r: str(r["ID"]),
        )
