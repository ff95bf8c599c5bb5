"""``service ps`` / ``node ps`` at scale must not hold the manager's event loop (issue 18).

The leader answers these on the loop that runs Raft and the dispatcher. Listing 100,000 tasks
and encoding the 33 MB reply were each one synchronous stretch (1.5 s and 0.5 s): sessions and
heartbeats waited behind them. Both now go in pieces with a yield between them. The tests
count how often another task got the loop during the call, which does not depend on the
machine's speed or load (a wall-clock lag bound would).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Awaitable
from typing import Any

import pytest
from shoal import states, yieldingjson
from shoal.cli import output
from shoal.daemon.localapi import LocalAPIServer
from shoal.manager import tasklist
from shoal.manager.controlapi import ControlAPI
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx
from shoal.testing.objectstore import InstantLog

TASKS = 4 * tasklist.CHUNK + 10
NODES = 20


def _control() -> ControlAPI:
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]
    service = pb.Service(id="svc1")
    service.spec.annotations.name = "web"
    service.spec.replicated.replicas = TASKS

    def seed(tx: Tx) -> None:
        tx.create(pb.Cluster(id="c1"))
        for n in range(NODES):
            node = pb.Node(id=f"node{n:02d}", role=pb.NodeSpec.WORKER)
            node.description.hostname = f"host-{n}"
            tx.create(node)
        tx.create(service)
        for i in range(TASKS):
            task = pb.Task(id=f"task{i:05d}", service_id="svc1", slot=i + 1, node_id=f"node{i % NODES:02d}")
            task.desired_state = states.RUNNING
            task.status.state = states.RUNNING if i % 3 else states.FAILED
            task.status.err = "" if i % 3 else "exit 1"
            if i % 2:
                task.service_annotations.CopyFrom(service.spec.annotations)  # the rest: by service ID
            tx.create(task)

    asyncio.run(store.update(seed))
    return ControlAPI(store, node_id="node00")


async def _turns_given_during(work: Awaitable[Any]) -> tuple[Any, int]:
    """``work``'s result, and how many times another task ran while it went on."""
    turns = 0
    done = False

    async def count() -> None:
        nonlocal turns
        while not done:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.get_running_loop().create_task(count())
    await asyncio.sleep(0)  # the counter starts before the work
    turns = 0
    try:
        result = await work
    finally:
        done = True
        await counter
    return result, turns


def test_service_ps_of_many_tasks_yields_the_loop_every_chunk() -> None:
    control = _control()

    async def run() -> tuple[Any, int]:
        return await _turns_given_during(control.handlers()["service.ps"]({"services": ["web"]}))

    result, turns = asyncio.run(run())
    rows = result["tasks"]
    assert len(rows) == TASKS
    assert turns >= TASKS // tasklist.CHUNK
    by_id = {row["ID"]: row for row in rows}
    assert by_id["task00000"]["State"] == "Failed" and by_id["task00000"]["Error"] == "exit 1"
    assert by_id["task00001"]["State"] == "Running" and by_id["task00001"]["DesiredState"] == "Running"
    assert {row["ServiceName"] for row in rows} == {"web"}  # from the task, or else its service
    assert by_id["task00021"]["Node"] == "host-1" and by_id["task00021"]["NodeID"] == "node01"


def test_filtered_service_ps_and_node_ps_yield_and_filter() -> None:
    control = _control()

    async def run() -> tuple[Any, int]:
        params = {"services": ["web"], "filters": ["node=host-3", "desired-state=running"]}
        return await _turns_given_during(control.handlers()["service.ps"](params))

    result, turns = asyncio.run(run())
    expected = [f"task{i:05d}" for i in range(3, TASKS, NODES)]
    assert sorted(row["ID"] for row in result["tasks"]) == expected
    assert turns >= TASKS // tasklist.CHUNK

    async def node_ps() -> Any:
        return await control.handlers()["service.ps"]({"node": "host-3"})

    assert sorted(row["ID"] for row in asyncio.run(node_ps())["tasks"]) == expected


class _Writer:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass


def test_a_large_local_api_reply_is_encoded_in_pieces_with_the_same_bytes() -> None:
    rows = [
        {"ID": f"t{i}", "Slot": i, "Nets": [{"Addresses": ["10.0.0.1/24"]}], "Ok": i % 2 == 0}
        for i in range(TASKS)
    ]
    message = {"result": {"tasks": rows, "now": 1.5, "empty": [], "name": 'quote " é'}}
    writer = _Writer()

    async def run() -> tuple[Any, int]:
        return await _turns_given_during(LocalAPIServer._send(writer, message))  # type: ignore[arg-type]

    _, turns = asyncio.run(run())
    assert bytes(writer.data) == json.dumps(message, separators=(",", ":")).encode() + b"\n"
    assert turns >= TASKS // yieldingjson.CHUNK


def test_yielding_json_matches_json_dumps_at_any_nesting() -> None:
    long = list(range(2 * yieldingjson.CHUNK + 1))
    for value in (
        [],
        {},
        [long, {"a": long}],
        {"x": [[long]], "y": None},
        long,
        "s",
        1.25,
        [{"k": long}] * 3,
        {True: long, None: long, 3: long, 2.5: long, False: 0},
    ):
        assert asyncio.run(yieldingjson.dumps(value)) == json.dumps(value, separators=(",", ":"))


def _general_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """The column loop ``render_table`` uses for uneven rows (and used for all before)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        "".join(
            c.ljust(widths[i] + output.PADDING) if i < len(r) - 1 else c for i, c in enumerate(r)
        ).rstrip()
        for r in [headers, *rows]
    ]
    return "\n".join(lines)


def test_the_fast_table_of_many_rows_prints_what_the_column_loop_printed() -> None:
    headers = ("ID", "NAME", "ERROR", "PORTS")
    rows = [
        (f"id{i}", "é" * (i % 7), '"{0} {x}"' if i % 5 == 0 else "", "" if i % 2 else "*:80->80/tcp")
        for i in range(50)
    ]
    assert output._render_even_table(headers, rows) == _general_table(headers, rows)
    assert output.render_table(headers, rows[:1]) == _general_table(headers, rows[:1])


class _CountingOut(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.mark.parametrize(("quiet", "fmt"), [(True, None), (False, "json"), (False, "{{.ID}}")])
def test_a_long_listing_is_one_write_not_one_per_line(
    monkeypatch: pytest.MonkeyPatch, quiet: bool, fmt: str | None
) -> None:
    out = _CountingOut()
    monkeypatch.setattr(sys, "stdout", out)
    items = [{"ID": f"id{i}"} for i in range(3000)] + [{"ID": ""}]
    output.print_list(
        items,
        fmt=fmt,
        quiet=quiet,
        headers=("ID",),
        row=lambda r: (r["ID"],),
        json_keys=("ID",),
        id_of=lambda r: r["ID"],
    )
    expected = [json.dumps({"ID": item["ID"]}) if fmt == "json" else item["ID"] for item in items]
    assert out.getvalue() == "".join(line + "\n" for line in expected)
    assert out.writes <= 10  # click may split one echo; one per line was 3,001 or more
    out = _CountingOut()
    monkeypatch.setattr(sys, "stdout", out)
    output.print_list(
        [], fmt=fmt, quiet=quiet, headers=("ID",), row=lambda r: (), json_keys=("ID",), id_of=str
    )
    assert out.getvalue() == ""


def test_an_encoded_list_is_written_from_its_texts_and_is_a_plain_list_to_anything_else() -> None:
    items = [[i, "x"] for i in range(2 * yieldingjson.CHUNK + 1)]
    texts = [f'["kept{i}"]' for i in range(len(items))]  # what its maker kept, used as they are
    value = {"rows": yieldingjson.EncodedList(items, texts), "n": 1}
    assert asyncio.run(yieldingjson.dumps(value)) == '{"rows":[' + ",".join(texts) + '],"n":1}'
    assert json.dumps(value) == json.dumps({"rows": items, "n": 1})
    assert value["rows"] == items
    assert len(repr(value["rows"])) < 200  # asyncio's repr of a task's result must stay cheap


def test_a_compact_service_ps_is_encoded_from_the_kept_texts_with_json_s_bytes() -> None:
    control = _control()
    handler = control.handlers()["service.ps"]
    for _ in range(2):  # the rows built, then the kept ones
        message = {"result": asyncio.run(handler({"services": ["web"], "compact": True}))}
        rows = message["result"]["rows"]
        assert isinstance(rows, yieldingjson.EncodedList) and len(rows.texts) == len(rows) == TASKS
        writer = _Writer()
        asyncio.run(LocalAPIServer._send(writer, message))  # type: ignore[arg-type]
        assert bytes(writer.data) == json.dumps(message, separators=(",", ":")).encode() + b"\n"
