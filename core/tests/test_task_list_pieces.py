"""``service ps`` rows written while they are built and read as they arrive (issue 18 item 2).

A first listing of 100,000 tasks had the manager build every row (~0.7 s) before it wrote
any, and the CLI parse every row only after the last arrived. With ``pieces`` the manager
writes each piece of rows as soon as it is built, a mark after it (JSON whitespace), and the
CLI parses each piece on arrival. What is printed must not change: the same rows in the same
order and widths, for every format, with filters, from an older daemon's whole reply or a
follower's relay of the leader's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from shoal import states, yieldingjson
from shoal.cli import output, piecereader, tasktable
from shoal.client import Client, ClientError
from shoal.daemon.localapi import LocalAPIServer
from shoal.daemon.node import map_error
from shoal.manager import requests as rq
from shoal.manager import tasklist
from shoal.manager.controlapi import ControlAPI
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx
from shoal.testing.objectstore import InstantLog

TASKS = 3 * tasklist.CHUNK + 17
NODES = 7
NOW = 10_000.0


def _control() -> ControlAPI:
    """A replicated service of ``TASKS`` tasks, each slot with a failed predecessor every
    tenth slot, errors and a host port here and there; a global service on every node."""
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]
    web = pb.Service(id="svcweb")
    web.spec.annotations.name = "web"
    agent = pb.Service(id="svcagent")
    agent.spec.annotations.name = "agent"

    def task(task_id: str, service: pb.Service, slot: int, node: int, created: float) -> pb.Task:
        made = pb.Task(id=task_id, service_id=service.id, slot=slot, node_id=f"node{node}")
        made.spec.container.image = f"img:{slot % 3}"
        made.meta.created_at = created
        made.status.timestamp = created + slot % 400
        made.desired_state = states.RUNNING
        made.status.state = states.RUNNING
        if slot % 2:
            made.service_annotations.CopyFrom(service.spec.annotations)
        return made

    def seed(tx: Tx) -> None:
        tx.create(pb.Cluster(id="c1"))
        for n in range(NODES):
            node = pb.Node(id=f"node{n}", role=pb.NodeSpec.WORKER)
            node.description.hostname = f"host-{n}"
            tx.create(node)
        tx.create(web)
        tx.create(agent)
        for slot in range(1, TASKS + 1):
            current = task(f"web{slot:05d}x1aaaaaaaaaaaaaa", web, slot, slot % NODES, 9000.0 - slot % 5)
            if slot % 11 == 0:
                port = current.endpoint.ports.add(protocol=pb.PortConfig.TCP, target_port=80)
                port.published_port, port.publish_mode = 8000 + slot, pb.PortConfig.HOST
            elif slot % 3 == 0:  # a VIP service's endpoint spec: no port
                current.endpoint.mode = pb.EndpointSpec.VIP
                current.endpoint.SetInParent()
            elif slot % 7 == 0:  # an ingress port: not a task's own
                port = current.endpoint.ports.add(protocol=pb.PortConfig.TCP, target_port=81)
                port.published_port, port.publish_mode = 9000 + slot, pb.PortConfig.INGRESS
            tx.create(current)
            if slot % 10 == 0:
                old = task(f"web{slot:05d}x0aaaaaaaaaaaaaa", web, slot, (slot + 1) % NODES, 8000.0)
                old.desired_state = states.SHUTDOWN
                old.status.state = states.FAILED
                old.status.err = "task: non-zero exit (1): the container exited early"
                tx.create(old)
        for n in range(NODES):
            tx.create(task(f"agent{n}bbbbbbbbbbbbbbbbbb", agent, 0, n, 2000.0 - n))

    asyncio.run(store.update(seed))
    return ControlAPI(store, node_id="node0")


class _Daemon:
    """A local API server on its own loop thread, serving ``service.ps`` from a ``ControlAPI``
    (``whole``: as a daemon that predates ``pieces`` does, or a follower relaying its leader's
    reply: the same value, parsed and written whole)."""

    def __init__(self, path: Path, control: ControlAPI, whole: bool = False) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = LocalAPIServer(path, map_error)
        handler = control.handlers()["service.ps"]

        async def relayed(params: dict[str, Any]) -> Any:
            return json.loads(await yieldingjson.dumps(await handler(params)))

        self.server.unary["service.ps"] = relayed if whole else handler
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The manager's clock (the reply's ``now``) fixed: the ages are compared."""
    monkeypatch.setattr(time, "time", lambda: NOW)


@pytest.fixture(scope="module")
def control() -> ControlAPI:
    """(Shared: the tests read its store, never change it.)"""
    return _control()


@pytest.fixture
def daemon(tmp_path: Path, control: ControlAPI) -> Iterator[_Daemon]:
    served = _Daemon(tmp_path / "api.sock", control)
    yield served
    served.close()


def _plain(control: ControlAPI, params: dict[str, Any]) -> dict[str, Any]:
    """The compact reply without pieces, as a CLI gets it (through JSON)."""
    result = asyncio.run(control.handlers()["service.ps"]({**params, "compact": True}))
    parsed: dict[str, Any] = json.loads(json.dumps(result))
    return parsed


def test_a_streamed_reply_is_the_compact_reply_with_marks_after_its_pieces(
    fixed_now: None, control: ControlAPI
) -> None:
    params = {"services": ["web", "agent"], "compact": True}
    streamed = asyncio.run(control.handlers()["service.ps"]({**params, "pieces": True}))
    assert isinstance(streamed, tasklist.StreamedRows)

    async def written() -> list[bytes]:
        parts = [part async for part in yieldingjson.line_parts({"result": streamed})]
        await control._ps_rows.settled()  # (its new rows are kept once the reply is written)
        return parts

    parts = asyncio.run(written())
    line = b"".join(parts)
    fresh = ControlAPI(control.store, node_id="node0")  # no kept rows: the same text anyway
    whole = _plain(fresh, params)
    assert list(whole) == ["columns", "rows", "now"]
    head_first = {"columns": whole["columns"], "now": whole["now"], "rows": whole["rows"]}
    plain = json.dumps({"result": head_first}, separators=(",", ":")).encode() + b"\n"
    assert line.replace(b"\r", b"") == plain  # the same bytes but for the marks, "now" first
    listed = len(control.store.view.service_tasks("svcweb")) + NODES
    pieces = -(-listed // tasklist.CHUNK)
    assert line.count(b"\r") == pieces + 1 and len(parts) >= pieces  # one write per piece at least
    assert json.loads(line) == json.loads(plain)
    # Kept rows serve the next listing, streamed or not, as for a plain one.
    assert control._ps_rows.rows
    again = asyncio.run(yieldingjson.dumps(asyncio.run(control.handlers()["service.ps"](params))))
    assert json.loads(again) == whole


def test_a_streamed_reply_in_a_dict_and_without_rows(fixed_now: None, control: ControlAPI) -> None:
    empty = asyncio.run(
        control.handlers()["service.ps"](
            {"services": ["web"], "compact": True, "pieces": True, "filters": ["desired-state=accepted"]}
        )
    )
    text = asyncio.run(yieldingjson.dumps({"result": empty, "warning": "stale"}))
    columns = json.dumps(list(tasklist.COMPACT_COLUMNS), separators=(",", ":"))
    assert text == '{"result":{"columns":' + columns + ',"now":10000.0,"rows":[\r]},"warning":"stale"}'
    with pytest.raises(TypeError):  # anywhere else, refused as json refuses an unknown type
        asyncio.run(yieldingjson.dumps([empty]))


def test_a_streamed_reply_s_clock_is_read_when_the_tasks_are_taken(
    monkeypatch: pytest.MonkeyPatch, control: ControlAPI
) -> None:
    """``now`` heads the reply, so the CLI can work out the ages as the rows come: it is the
    clock when the handler took the tasks, not after the last row was built."""
    clock = iter(range(1, 1000))
    monkeypatch.setattr(time, "time", lambda: float(next(clock)))
    streamed = asyncio.run(
        control.handlers()["service.ps"]({"services": ["web"], "compact": True, "pieces": True})
    )
    read_then = next(clock)
    assert json.loads(asyncio.run(yieldingjson.dumps(streamed)))["now"] == read_then - 1


def test_pieces_is_a_request_flag_of_compact_listings() -> None:
    assert rq.TaskList.parse({"services": ["web"], "compact": True, "pieces": True}).pieces
    assert not rq.TaskList.parse({"services": ["web"], "compact": True}).pieces
    assert not rq.TaskList.parse({"node": "n1", "pieces": "yes"}).pieces


def test_the_cli_parses_each_piece_while_the_manager_builds_the_next(
    monkeypatch: pytest.MonkeyPatch, daemon: _Daemon, control: ControlAPI
) -> None:
    """The third piece is not built until the CLI has the first one's rows: with the reply
    written whole, it never has them before the end (the manager waits out the deadline)."""
    first_piece_read = threading.Event()
    built: list[int] = []
    build = tasklist._compact_rows

    def building(piece: Any, *args: Any) -> None:
        if len(built) == 2:
            first_piece_read.wait(10)
        built.append(len(piece))
        build(piece, *args)

    monkeypatch.setattr(tasklist, "_compact_rows", building)
    handed: list[tuple[int, int, bool]] = []

    def take(head: dict[str, Any], rows: list[Any]) -> None:
        handed.append((len(rows), len(built), first_piece_read.is_set()))
        first_piece_read.set()

    client = Client(f"unix://{daemon.path}")
    params = {"services": ["web"], "compact": True, "pieces": True}
    result = piecereader.call_in_pieces(client, "service.ps", params, take)
    assert handed[0][1] <= 2 and not handed[0][2]  # the first piece, while the third waited
    assert [rows for rows, _, _ in handed] == built and len(built) == 4
    assert sum(built) == len(control.store.view.service_tasks("svcweb"))
    assert result["rows"] == [] and result["columns"] == list(tasklist.COMPACT_COLUMNS)


def _shown(daemon: _Daemon, argv: list[str]) -> click.testing.Result:
    """``argv`` run through ``list_tasks`` (what ``service ps``/``node ps`` call) against ``daemon``."""

    @click.command()
    @click.option("-H", "host")
    @click.option("-q", "quiet", is_flag=True)
    @click.option("--no-trunc", is_flag=True)
    @click.option("--format", "fmt")
    @click.option("--filter", "filters", multiple=True)
    @click.option("--node")
    @click.pass_context
    def ps(
        ctx: click.Context,
        host: str,
        quiet: bool,
        no_trunc: bool,
        fmt: str | None,
        filters: tuple[str, ...],
        node: str | None,
    ) -> None:
        params: dict[str, Any] = {"node": node} if node else {"services": ["web", "agent"]}
        if filters:
            params["filters"] = list(filters)
        tasktable.list_tasks(ctx, params, quiet=quiet, no_trunc=no_trunc, fmt=fmt)

    return CliRunner().invoke(ps, ["-H", f"unix://{daemon.path}", *argv])


@pytest.mark.parametrize("fmt", [None, "json", "{{.Name}} {{.CurrentState}} {{.Error}}"])
@pytest.mark.parametrize(("quiet", "no_trunc"), [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize(
    "params",
    [
        {"services": ["web", "agent"]},
        {"services": ["web", "agent"], "filters": ["desired-state=running"]},
        {"node": "host-2"},
    ],
)
@pytest.mark.parametrize("whole", [False, True])
def test_what_is_printed_is_what_the_whole_reply_printed(
    capsys: pytest.CaptureFixture[str],
    fixed_now: None,
    tmp_path: Path,
    control: ControlAPI,
    params: dict[str, Any],
    fmt: str | None,
    quiet: bool,
    no_trunc: bool,
    whole: bool,
) -> None:
    """Against a manager writing pieces, and one writing the reply whole (older, or a
    follower's relay): what ``print_tasks`` printed of the whole compact reply."""
    tasktable.print_tasks(_plain(control, params), quiet=quiet, no_trunc=no_trunc, fmt=fmt)
    expected = capsys.readouterr().out
    served = _Daemon(tmp_path / "api.sock", ControlAPI(control.store, node_id="node0"), whole=whole)
    try:
        argv = ["-q"] if quiet else []
        argv += ["--no-trunc"] if no_trunc else []
        argv += ["--format", fmt] if fmt else []
        argv += [f"--filter={value}" for value in params.get("filters", [])]
        argv += ["--node", params["node"]] if "node" in params else []
        shown = _shown(served, argv)
    finally:
        served.close()
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == expected and len(expected.splitlines()) >= (8 if "node" in params else 3000)


def test_a_refusal_is_one_line_and_exit_code_as_before(daemon: _Daemon) -> None:
    shown = _shown(daemon, ["--node", "nosuchnode"])
    assert shown.exit_code == 2 and shown.stdout == ""
    assert shown.stderr.startswith("Error: ") and "nosuchnode" in shown.stderr
    assert len(shown.stderr.splitlines()) == 1


def test_a_reply_line_fed_in_any_slices_gives_the_same_pieces() -> None:
    rows = [['a\r\n"]', 1], ["b", 2], ["c", 3]]
    line = (
        b'{"result":{"columns":["ID","Slot"],"rows":[\r'
        + json.dumps(rows[:2], separators=(",", ":")).encode()[1:-1]
        + b"\r,"
        + json.dumps(rows[2:], separators=(",", ":")).encode()[1:-1]
        + b'\r],"now":1.5},"warning":"w"}\n'
    )
    for size in (1, 2, 7, len(line)):
        pieces: list[list[Any]] = []
        reader = piecereader._Line(lambda head, got, into=pieces: into.append(got))
        for start in range(0, len(line), size):
            reader.feed(line[start : start + size])
        assert reader.done and pieces == [rows[:2], rows[2:]]
        message = reader.message()
        assert message == {"result": {"columns": ["ID", "Slot"], "rows": [], "now": 1.5}, "warning": "w"}
    plain = b'{"result":{"columns":["ID"],"rows":[["x\\r"]],"now":1}}\n'  # no marks: whole
    reader = piecereader._Line(lambda head, got: pytest.fail("no piece"))
    reader.feed(plain)
    assert reader.message()["result"]["rows"] == [["x\r"]]
    odd = b'{"result":[1,\r2]}\n'  # a mark in a reply of another shape: parsed whole
    reader = piecereader._Line(lambda head, got: pytest.fail("no piece"))
    reader.feed(odd)
    assert reader.message() == {"result": [1, 2]}


def test_cells_and_widths_are_made_as_the_pieces_come(
    capsys: pytest.CaptureFixture[str], fixed_now: None, control: ControlAPI
) -> None:
    """With ``now`` in the reply's head, each piece's cells and the table's widths are made
    when it arrives: what is left after the last piece is the sort and one formatting pass.
    Without it, the rows are kept as they come; with -q, the IDs and sort keys only."""
    reply = _plain(control, {"services": ["web", "agent"]})
    head = {"columns": reply["columns"], "now": reply["now"], "rows": []}
    rows = reply["rows"]
    reading = tasktable._Reading(quiet=False, no_trunc=False)
    reading.take(head, rows[:100])
    assert reading.columns is not None and len(reading.columns.cells[5]) == 100  # the ages
    assert reading.columns.widths[0] == 12  # the IDs, cut
    reading.take(head, rows[100:])
    tasktable._echo_table(*reading.result({**head, "rows": []})["listing"].sorted())
    assert (
        capsys.readouterr().out
        == output.render_table(tasktable.HEADERS, tasktable.task_cells(reply, False)) + "\n"
    )
    quiet = tasktable._Reading(quiet=True, no_trunc=False)
    quiet.take(head, rows[:100])
    assert quiet.columns is not None and len(quiet.columns.cells[0]) == 100
    assert not any(quiet.columns.cells[1:])
    no_clock = tasktable._Reading(quiet=False, no_trunc=False)
    no_clock.take({**head, "now": None}, rows[:100])
    assert no_clock.columns is None and len(no_clock._rows) == 100


def test_an_answer_cut_short_after_its_first_pieces_is_one_error_line() -> None:
    """A manager that fails after writing pieces appends its error line to them: the CLI says
    the answer was cut short, as one ``ClientError``, not a JSON traceback."""
    reader = piecereader._Line(lambda head, got: None)
    reader.feed(b'{"result":{"columns":["ID"],"now":1,"rows":[\r["a"]\r{"error":{"code":"INTERNAL"}}\n')
    assert reader.done
    with pytest.raises(ClientError, match="cut short"):
        reader.message()


def test_a_row_s_ports_are_ps_text_of_the_task_s_endpoint_ports() -> None:
    """``_ports`` skips the text for an endpoint without ports (a VIP service's spec in each
    task): the same text as ``ports.ps_text`` of the task's endpoint ports in every case."""
    from shoal import ports

    no_endpoint = pb.Task(id="t0")
    vip = pb.Task(id="t1")
    vip.endpoint.mode = pb.EndpointSpec.VIP
    vip.endpoint.SetInParent()
    dnsrr = pb.Task(id="t2")
    dnsrr.endpoint.mode = pb.EndpointSpec.DNSRR
    published = pb.Task(id="t3")
    for mode, number in ((pb.PortConfig.HOST, 8080), (pb.PortConfig.INGRESS, 30001), (pb.PortConfig.HOST, 0)):
        port = published.endpoint.ports.add(protocol=pb.PortConfig.TCP, target_port=80)
        port.published_port, port.publish_mode = number, mode
    for task in (no_endpoint, vip, dnsrr, published):
        assert tasklist._ports(task) == ports.ps_text(task.endpoint.ports)
    assert tasklist._ports(published) == "*:8080->80/tcp" and tasklist._ports(vip) == ""


def test_a_first_listing_keeps_its_rows_after_its_last_piece(fixed_now: None, control: ControlAPI) -> None:
    """A first listing writes each piece's new rows as one encoded list and keeps the rows
    (version, text) only after its last piece: the CLI does not wait for that (100,000 tasks:
    ~0.35 s of the manager's CPU). The next listing reuses them, and one after a task changed
    mixes kept texts and a new row: the same bytes as a listing with nothing kept."""
    fresh = ControlAPI(control.store, node_id="node0")
    params = {"services": ["web", "agent"], "compact": True, "pieces": True}

    async def listing() -> tuple[bytes, int]:
        streamed = await fresh.handlers()["service.ps"](params)
        parts = [part async for part in yieldingjson.line_parts({"result": streamed})]
        kept_at_the_end = len(fresh._ps_rows.rows)
        await fresh._ps_rows.settled()
        return b"".join(parts), kept_at_the_end

    first, kept_then = asyncio.run(listing())
    assert kept_then == 0
    assert len(fresh._ps_rows.rows) == sum(
        1 for task in control.store.view.tasks.items.values() if task.service_annotations.name
    )
    assert all(text == yieldingjson.encode(row) for _, _, row, text in fresh._ps_rows.rows.values())
    again, _ = asyncio.run(listing())
    assert again == first
    nothing_kept = ControlAPI(control.store, node_id="node0")
    plain = asyncio.run(
        yieldingjson.dumps({"result": asyncio.run(nothing_kept.handlers()["service.ps"](params))})
    )
    assert first == plain.encode() + b"\n"
    # One kept row made stale (another version): its piece mixes kept texts and a new row.
    task_id, (version, host, row, text) = next(iter(fresh._ps_rows.rows.items()))
    fresh._ps_rows.rows[task_id] = (version + 1, host, row, text.replace(str(row[2]), "0"))
    mixed, _ = asyncio.run(listing())
    assert mixed == first


def test_rows_come_by_slot(fixed_now: None, control: ControlAPI) -> None:
    """The store gives a service's tasks in a set's order; the rows come by slot, so the
    CLI's sorts find long runs and its cells are read in the order they were made (its
    work after the last piece, 100,000 rows: 0.37-0.46 -> 0.17-0.24 s). Printed the same
    (the tests above)."""
    params = {"services": ["web", "agent"], "compact": True}
    slot = tasklist.COMPACT_COLUMNS.index("Slot")
    streamed = asyncio.run(control.handlers()["service.ps"]({**params, "pieces": True}))
    rows = json.loads(asyncio.run(yieldingjson.dumps(streamed)))["rows"]
    assert len(rows) > 3000 and [row[slot] for row in rows] == sorted(row[slot] for row in rows)
    assert _plain(control, params)["rows"] == rows


def test_kept_texts_are_cut_from_their_piece_s_text_unless_a_string_holds_the_cut() -> None:
    rows = [("a", "web", 1, 1.5), ("b", "x],[y", 2, 2.5), ("c", "", 3, float("inf"))]
    text = yieldingjson.encode(rows)[1:-1]
    assert tasklist._row_texts(text, 3) is None  # "],[" in a string: encoded one by one instead
    plain = [rows[0], rows[2]]
    cut = tasklist._row_texts(yieldingjson.encode(plain)[1:-1], 2)
    assert cut == [yieldingjson.encode(row) for row in plain]
