"""``service ps`` of many rows made as columns (issue 18 item 2): what is printed is what the
tuple-per-row code printed before, byte for byte.

``_reference_output`` below is that code (records, keyed cells, three stable sorts, the
history marks, ``render_table``), kept here as the reference. A generated listing of 100,000
rows with what makes a listing hard (history rows out of order, global services, several
services, odd and long names, errors long and short, ports, missing clocks, ages from a second
to years, states mixed) is printed by both, as a table, ``--no-trunc``, ``-q``, ``json`` and
templates, read whole and in pieces.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Any

import click
import pytest
from shoal.cli import output, piecereader, tasktable
from shoal.ids import SHORT_ID_LENGTH
from shoal.manager.tasklist import COMPACT_COLUMNS

NOW = 1_800_000_000.25
COLUMNS = list(COMPACT_COLUMNS)  # what a manager names in its reply
#: Ages (seconds before ``NOW``) at and around every step of docker's texts, and odd ones.
EDGES = [0.0, -5.0, 0.5, 0.999, 1.0, 1.5, 59.999, 60.0, 119.5, 3599.99, 3600.0, 7199.0, 172799.5]
EDGES += [172800.0, 1209599.0, 1209600.0, 5183999.9, 5184000.0, 63071999.0, 63072000.0, 4e8, 9e9]


def _ids(rng: random.Random, count: int) -> Iterator[str]:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    for _ in range(count):
        yield "".join(rng.choices(alphabet, k=25))


def _rows(count: int, seed: int = 18) -> list[list[Any]]:
    """``count`` compact rows, shuffled by service and slot, as a manager's (of any age) may send."""
    rng = random.Random(seed)
    ids = _ids(rng, count)
    services = ["web", "a.b.c", "ünï-%s%%", "z" * 40, "agent"]
    nodes = [
        (f"node{n:03d}xxxxxxxxxxxxxxxxx", f"host-{n}" if n % 7 else f"höst-{n}-" + "x" * n) for n in range(60)
    ]
    images = [
        "shoal-busybox:1",
        "registry.example.com:5000/team/" + "long-image-name" * 5 + ":v1.2.3",
        "%s:%d",
    ]
    errors = ["", "", "", "", "oom", "task: non-zero exit (1): the container exited early", 'quote " é' * 5]
    states = ["Running", "Running", "Running", "Failed", "Shutdown", "Pending", "Starting"]
    rows: list[list[Any]] = []
    slot = 0
    while len(rows) < count:
        service = rng.choice(services)
        glob = service == "agent"
        slot += 1
        history = rng.choice([1, 1, 1, 1, 2, 3, 5])
        node_id, hostname = rng.choice(nodes)
        base = NOW - rng.choice(EDGES) - 100
        for attempt in range(history):
            if len(rows) == count:
                break
            age = rng.choice(EDGES) if rng.random() < 0.3 else rng.uniform(0, 4e7)
            rows.append(
                [
                    next(ids),
                    service,
                    0 if glob else slot,
                    node_id,
                    rng.choice(images),
                    hostname,
                    "Running" if attempt == history - 1 else "Shutdown",
                    rng.choice(states),
                    None if rng.random() < 0.01 else (0 if rng.random() < 0.01 else NOW - age),
                    rng.choice(errors),
                    "*:8080->80/tcp" if rng.random() < 0.05 else "",
                    0 if rng.random() < 0.01 else base + rng.choice([attempt, -attempt, 0.5]),
                ]
            )
    rng.shuffle(rows)
    return rows


def _reply(rows: list[list[Any]]) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(json.dumps({"columns": COLUMNS, "rows": rows, "now": NOW}))
    return reply


# The code before the columns (tasktable at bcf550a), as the reference.
_FIELDS = tasktable._FIELDS  # the fields it reads, in the order it unpacks them


def _records(result: dict[str, Any]) -> list[tuple[Any, ...]]:
    if "rows" in result:
        picker = itemgetter(*(result["columns"].index(field) for field in _FIELDS))
        return list(map(picker, result["rows"]))
    return list(map(itemgetter(*_FIELDS), result["tasks"]))


def _sort(records: list[Any], created: Callable[[Any], float]) -> None:
    records.sort(key=created, reverse=True)
    if all(map(itemgetter(1), records)):
        records.sort(key=itemgetter(1))
        records.sort(key=itemgetter(0))
    else:
        records.sort(key=lambda r: (r[0], r[1] or r[2]))


def _keyed_cells(records: Iterable[tuple[Any, ...]], now: float, no_trunc: bool) -> list[Any]:
    keyed = []
    cut = None if no_trunc else SHORT_ID_LENGTH
    for service, slot, node_id, created, task_id, image, node, desired, state, stamp, error, ports in records:
        if error:
            error = f'"{error[:29]}…"' if not no_trunc and len(error) > 30 else f'"{error}"'
        else:
            error = ""
        ago = output.human_duration(now - float(stamp or now))
        cells = (
            task_id[:cut],
            f"{service}.{slot or node_id}",
            image,
            node,
            desired,
            f"{state} {ago} ago",
            error,
            ports,
        )
        keyed.append((service, slot, node_id, float(created or 0), cells))
    return keyed


def _marked(keyed: list[Any]) -> Iterator[tuple[str, ...]]:
    previous_service: Any = None
    previous_slot: Any = None
    for service, slot, node_id, _, cells in keyed:
        slot_id = slot or node_id
        if slot_id == previous_slot and service == previous_service:
            yield (cells[0], " \\_ " + cells[1], *cells[2:])
        else:
            previous_service, previous_slot = service, slot_id
            yield cells


def _reference_output(result: dict[str, Any], *, quiet: bool, no_trunc: bool, fmt: str | None) -> str:
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), tasktable.collector_paused():
        if quiet:
            records = _records(result)
            _sort(records, lambda r: float(r[3] or 0))
            cut = None if no_trunc else SHORT_ID_LENGTH
            output._echo_lines([task_id[:cut] for task_id in map(itemgetter(4), records)])
            return shown.getvalue()
        keyed = _keyed_cells(_records(result), float(result["now"]), no_trunc)
        _sort(keyed, itemgetter(3))
        cells = list(_marked(keyed))
        if fmt in (None, "", "table"):
            print(output.render_table(tasktable.HEADERS, cells))
        else:
            output.print_list(
                [dict(zip(tasktable.TASK_KEYS, row, strict=True)) for row in cells],
                fmt=fmt,
                quiet=False,
                headers=tasktable.HEADERS,
                row=lambda r: tuple(str(r[k]) for k in tasktable.TASK_KEYS),
                json_keys=tasktable.TASK_KEYS,
                id_of=lambda r: str(r["ID"]),
            )
    return shown.getvalue()


def _printed(result: dict[str, Any], **options: Any) -> str:
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), tasktable.collector_paused():
        tasktable.print_tasks(result, **options)
    return shown.getvalue()


def _streamed(rows: list[list[Any]]) -> bytes:
    """The reply line as a manager streams it: a mark after its head and after each piece."""
    head = json.dumps({"result": {"columns": COLUMNS, "now": NOW, "rows": []}})[: -len("]}}")]
    pieces = [json.dumps(rows[start : start + 1000])[1:-1] for start in range(0, len(rows), 1000)]
    return (head + "\r" + "\r,".join(pieces) + ("\r" if pieces else "") + "]}}\n").encode()


def _read_in_pieces(line: bytes, size: int, *, quiet: bool, no_trunc: bool) -> dict[str, Any]:
    """What ``list_tasks`` hands ``print_tasks``: ``line`` fed to the reader in slices of
    ``size`` bytes."""
    with tasktable.collector_paused():
        reading = tasktable._Reading(quiet=quiet, no_trunc=no_trunc)
        reader = piecereader._Line(reading.take)
        for start in range(0, len(line), size):
            reader.feed(line[start : start + size])
        return reading.result(reader.message()["result"])


@pytest.fixture(scope="module")
def many() -> tuple[dict[str, Any], bytes]:
    """A reply of 100,000 rows, and its streamed line (printing changes neither)."""
    rows = _rows(100_000)
    return _reply(rows), _streamed(rows)


@pytest.mark.parametrize(("quiet", "no_trunc"), [(False, False), (False, True), (True, False)])
def test_a_listing_of_100000_rows_prints_what_the_row_code_printed(
    many: tuple[dict[str, Any], bytes], quiet: bool, no_trunc: bool
) -> None:
    reply, line = many
    options: dict[str, Any] = {"quiet": quiet, "no_trunc": no_trunc, "fmt": None}
    expected = _reference_output(reply, **options)
    assert len(expected.splitlines()) == 100_000 + (0 if quiet else 1)
    assert _printed(reply, **options) == expected  # read whole
    assert _printed(_read_in_pieces(line, 1 << 18, quiet=quiet, no_trunc=no_trunc), **options) == expected
    if not quiet:
        assert "\\_ " in expected and "Less than a second" in expected and " years ago" in expected


def test_the_table_is_written_in_blocks_of_lines(
    many: tuple[dict[str, Any], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write is at most ``_BLOCK`` whole lines (a 100,000-row table was one 15 MB string,
    copied and encoded in one go), and together they are the table and its last newline."""
    reply, _ = many
    written: list[str] = []
    monkeypatch.setattr(click, "echo", lambda text: written.append(text + "\n"))
    tasktable.print_tasks(reply, quiet=False, no_trunc=False, fmt=None)
    assert max(text.count("\n") for text in written) <= tasktable._BLOCK <= 1024
    assert "".join(written) == _reference_output(reply, quiet=False, no_trunc=False, fmt=None)


@pytest.mark.parametrize("image", ["shoal-busybox:1", "odd:%s%%d"])
def test_one_service_of_100000_tasks_in_slot_order(image: str) -> None:
    """The listing the manager sends for one big service: its rows by slot, one a slot (in
    docker's order already: not sorted), one image, desired state, no error and no ports in
    every row (each piece's column one shared text); a ``%`` in the image printed as is."""
    rows = [
        [
            f"{slot:025d}",
            "web",
            slot,
            "nodeid",
            image,
            f"host-{slot % 999}",
            "Running",
            "Running",
            NOW - slot % 900,
            "",
            "",
            NOW - 1000,
        ]
        for slot in range(1, 100_001)
    ]
    reply = _reply(rows)
    for quiet in (False, True):
        options: dict[str, Any] = {"quiet": quiet, "no_trunc": False, "fmt": None}
        expected = _reference_output(reply, **options)
        if not quiet:
            assert f" {image}   " in expected.splitlines()[1]
        assert _printed(reply, **options) == expected
        assert (
            _printed(_read_in_pieces(_streamed(rows), 1 << 18, quiet=quiet, no_trunc=False), **options)
            == expected
        )


@pytest.mark.parametrize(
    "fmt", [None, "json", "{{.Name}} {{.CurrentState}} {{.Error}}", "table {{.ID}}\\t{{.Ports}}"]
)
@pytest.mark.parametrize("no_trunc", [False, True])
def test_other_formats_and_quiet_print_what_the_row_code_printed(no_trunc: bool, fmt: str | None) -> None:
    rows = _rows(5_000, seed=7)
    line = _streamed(rows)
    for quiet in (False, True):
        options: dict[str, Any] = {"quiet": quiet, "no_trunc": no_trunc, "fmt": fmt}
        expected = _reference_output(_reply(rows), **options)
        assert _printed(_reply(rows), **options) == expected
        assert _printed(_read_in_pieces(line, 4096, quiet=quiet, no_trunc=no_trunc), **options) == expected


@pytest.mark.parametrize("count", [0, 1, 2, 999, 1001])
def test_small_listings_and_a_service_in_slot_order(count: int) -> None:
    """Empty, one row, and one service's tasks one a slot by slot (the order the manager sends,
    printed without a sort) and with one slot's history after it."""
    ordered = [
        [
            f"t{slot:030d}",
            "web",
            slot,
            "n1",
            "img",
            "h1",
            "Running",
            "Running",
            NOW - slot,
            "",
            "",
            NOW - slot,
        ]
        for slot in range(1, count + 1)
    ]
    cases = [ordered, _rows(count, seed=count)]
    if count > 1:
        cases.append([*ordered, [*ordered[0][:1], *ordered[1][1:3], *ordered[0][3:11], NOW]])  # newer, last
        cases.append([*ordered[:1], [*ordered[1][:2], 1, *ordered[1][3:]], *ordered[2:]])  # slot 1 twice
    for rows in cases:
        for quiet in (False, True):
            options: dict[str, Any] = {"quiet": quiet, "no_trunc": False, "fmt": None}
            expected = _reference_output(_reply(rows), **options)
            assert _printed(_reply(rows), **options) == expected
            assert (
                _printed(_read_in_pieces(_streamed(rows), 999, quiet=quiet, no_trunc=False), **options)
                == expected
            )


def test_task_dicts_print_what_compact_rows_print() -> None:
    rows = _rows(3_000, seed=3)
    tasks = {"tasks": [dict(zip(COLUMNS, row, strict=True)) for row in rows], "now": NOW}
    for quiet in (False, True):
        options: dict[str, Any] = {"quiet": quiet, "no_trunc": False, "fmt": None}
        assert _printed(json.loads(json.dumps(tasks)), **options) == _reference_output(
            _reply(rows), **options
        )


def test_the_ages_table_is_human_duration() -> None:
    """The ages are looked up in a table of docker's steps, checked when it is made: the same
    text as ``human_duration`` at and around every step, and anywhere."""
    table = tasktable._age_steps()
    assert table is not None  # (else every age would be worked out one by one)
    starts, texts = table
    assert len(starts) > 200 and texts[-1] is None
    ages = [math.nan, math.inf * -1, -1e-9, 1e12, *EDGES]
    for start in starts:
        ages += [start, math.nextafter(start, 0.0), math.nextafter(start, math.inf), start - 0.5, start + 0.5]
    rng = random.Random(5)
    ages += [rng.uniform(-10, 4e8) for _ in range(20_000)] + [
        float(rng.randrange(0, 10**8)) for _ in range(20_000)
    ]
    assert tasktable._ages(ages) == [output.human_duration(age) for age in ages]


def test_young_objects_are_not_collected_when_the_collector_is_on_again() -> None:
    """Everything made during a listing leaves the young generation when the collector is on
    again: its first allocation does not run a pass over all of it (0.05 s at 100,000 rows).
    In a fresh interpreter: another test may leave objects frozen in this one (then the
    young generation is left as it is, not to release them)."""
    probe = (
        "import gc\n"
        "from shoal.cli import tasktable\n"
        "with tasktable.collector_paused():\n"
        "    made = [[index] for index in range(20_000)]\n"
        "assert gc.isenabled() and gc.get_freeze_count() == 0, gc.get_freeze_count()\n"
        "assert any(kept is made[0] for kept in gc.get_objects(generation=2))\n"
        "gc.freeze()\n"
        "with tasktable.collector_paused():\n"
        "    made = [[index] for index in range(20_000)]\n"
        "assert gc.get_freeze_count() > 0\n"
        "assert not any(kept is made[0] for kept in gc.get_objects(generation=2))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
