"""``service ps`` / ``node ps`` through compact rows (issue 18 item 2).

The CLI asks the manager for compact rows (lists of the columns its listings are made of)
instead of whole task dicts: half the bytes to encode, send and parse. What is printed
must not depend on which reply came (an older daemon sends the dicts): every format, with
and without ``--no-trunc``, history rows, global tasks and filters.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import pytest
from shoal import states
from shoal.cli import output, tasktable
from shoal.ids import short_id
from shoal.manager import tasklist
from shoal.manager.controlapi import ControlAPI
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx
from shoal.testing.objectstore import InstantLog

NODES = 3


def _task(task_id: str, service: pb.Service, slot: int, node: int, created: float) -> pb.Task:
    task = pb.Task(id=task_id, service_id=service.id, slot=slot, node_id=f"node{node}")
    task.spec.container.image = f"img:{int(created) % 2}"
    task.meta.created_at = created
    task.status.timestamp = created + 1
    task.desired_state = states.RUNNING
    task.status.state = states.RUNNING
    return task


def _control() -> ControlAPI:
    """A replicated service with history (failed, then replaced) and a host port on a
    running task, and a global service (slot 0: named by node)."""
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]
    web = pb.Service(id="svcweb")
    web.spec.annotations.name = "web"
    agent = pb.Service(id="svcagent")
    agent.spec.annotations.name = "agent"

    def seed(tx: Tx) -> None:
        tx.create(pb.Cluster(id="c1"))
        for n in range(NODES):
            node = pb.Node(id=f"node{n}", role=pb.NodeSpec.WORKER)
            node.description.hostname = f"host-{n}"
            tx.create(node)
        tx.create(web)
        tx.create(agent)
        for slot in (1, 2, 3):
            for attempt in range(3):
                task = _task(
                    f"web{slot}x{attempt}aaaaaaaaaaaaaaaa", web, slot, slot % NODES, 1000.0 + attempt
                )
                if attempt < 2:
                    task.desired_state = states.SHUTDOWN
                    task.status.state = states.FAILED
                    task.status.err = "task: non-zero exit (1): the container exited" if attempt else "oom"
                elif slot == 2:
                    port = task.endpoint.ports.add(protocol=pb.PortConfig.TCP, target_port=80)
                    port.published_port, port.publish_mode = 8080, pb.PortConfig.HOST
                if slot == 3:
                    task.service_annotations.CopyFrom(web.spec.annotations)
                tx.create(task)
        for n in range(NODES):
            tx.create(_task(f"agent{n}bbbbbbbbbbbbbbbbbb", agent, 0, n, 2000.0 - n))

    asyncio.run(store.update(seed))
    return ControlAPI(store, node_id="node0")


def _ps(control: ControlAPI, **params: Any) -> Any:
    """The reply as the CLI gets it: through JSON, the clock fixed (the ages are compared)."""
    result = asyncio.run(control.handlers()["service.ps"](params))
    result["now"] = 5000.0
    return json.loads(json.dumps(result))


def test_the_compact_reply_is_lists_of_its_named_columns() -> None:
    control = _control()
    full = _ps(control, services=["web", "agent"])
    compact = _ps(control, services=["web", "agent"], compact=True)
    assert "tasks" not in compact and compact["columns"] == list(tasklist.COMPACT_COLUMNS)
    assert len(compact["rows"]) == len(full["tasks"]) == 12
    for row, task in zip(compact["rows"], full["tasks"], strict=True):
        assert row == [task[column] for column in compact["columns"]]
    assert len(json.dumps(compact)) < len(json.dumps(full)) * 0.7


@pytest.mark.parametrize("fmt", [None, "table", "json", "{{.Name}} {{.CurrentState}}", "table {{.ID}}"])
@pytest.mark.parametrize(("quiet", "no_trunc"), [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize(
    "params",
    [
        {"services": ["web", "agent"]},
        {"services": ["web"], "filters": ["desired-state=running"]},
        {"node": "host-2"},
    ],
)
def test_compact_rows_print_what_task_dicts_print(
    capsys: pytest.CaptureFixture[str], params: dict[str, Any], fmt: str | None, quiet: bool, no_trunc: bool
) -> None:
    control = _control()
    tasktable.print_tasks(_ps(control, **params), quiet=quiet, no_trunc=no_trunc, fmt=fmt)
    from_dicts = capsys.readouterr().out
    tasktable.print_tasks(_ps(control, compact=True, **params), quiet=quiet, no_trunc=no_trunc, fmt=fmt)
    assert capsys.readouterr().out == from_dicts
    assert from_dicts.strip()


def _reference_rows(result: dict[str, Any], no_trunc: bool) -> list[dict[str, Any]]:
    """The rows as the CLI built them from task dicts before compact rows (one sort on a key
    tuple, a dict per row): what ``task_rows`` must still give."""
    now = float(result["now"])
    tasks = result["tasks"]
    tasks.sort(key=lambda t: (t["ServiceName"], t["Slot"] or t["NodeID"], -float(t["CreatedAt"] or 0)))
    rows = []
    previous_slot: tuple[str, Any] | None = None
    for task in tasks:
        slot_key = (task["ServiceName"], task["Slot"] or task["NodeID"])
        name = f"{task['ServiceName']}.{task['Slot'] if task['Slot'] else task['NodeID']}"
        if slot_key == previous_slot:
            name = " \\_ " + name
        previous_slot = slot_key
        error = task["Error"]
        if error and not no_trunc and len(error) > 30:
            error = error[:29] + "…"
        ago = output.human_duration(now - float(task["Timestamp"] or now))
        rows.append(
            {
                "ID": task["ID"] if no_trunc else short_id(task["ID"]),
                "Name": name,
                "Image": task["Image"],
                "Node": task["Node"],
                "DesiredState": task["DesiredState"],
                "CurrentState": f"{task['State']} {ago} ago",
                "Error": f'"{error}"' if error else "",
                "Ports": task["Ports"],
            }
        )
    return rows


@pytest.mark.parametrize("no_trunc", [False, True])
@pytest.mark.parametrize("services", [["web", "agent"], ["agent"], ["web"]])
def test_rows_are_what_the_dict_per_row_code_gave(services: list[str], no_trunc: bool) -> None:
    control = _control()
    expected = _reference_rows(_ps(control, services=services), no_trunc)
    assert tasktable.task_rows(_ps(control, services=services), no_trunc) == expected
    assert tasktable.task_rows(_ps(control, services=services, compact=True), no_trunc) == expected


def test_the_table_of_many_rows_is_the_column_loop_s_with_percent_signs_as_is() -> None:
    rows = [(f"id{i}", "%s %d %%" if i % 3 == 0 else "é" * (i % 4), "" if i % 2 else "x") for i in range(40)]
    headers = ("ID", "NAME", "PORTS")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    expected = "\n".join(
        "".join(c.ljust(widths[i] + output.PADDING) if i < 2 else c for i, c in enumerate(r)).rstrip()
        for r in [headers, *rows]
    )
    assert output.render_table(headers, rows) == expected


def test_the_table_keeps_docker_order_history_and_truncation(capsys: pytest.CaptureFixture[str]) -> None:
    tasktable.print_tasks(
        _ps(_control(), services=["web"], compact=True), quiet=False, no_trunc=False, fmt=None
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "IMAGE"]
    names = [line.split("   ")[1].strip() for line in lines[1:]]
    assert names == [n for slot in (1, 2, 3) for n in (f"web.{slot}", f"\\_ web.{slot}", f"\\_ web.{slot}")]
    assert lines[1].startswith("web1x2aaaaaa ")  # newest first, 12 characters
    assert '"task: non-zero exit (1): the …"' in lines[2] and '"oom"' in lines[3]
    assert lines[4].rstrip().endswith("*:8080->80/tcp")


def test_the_collector_is_paused_for_a_listing_and_restored() -> None:
    assert gc.isenabled()
    with tasktable.collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), tasktable.collector_paused():
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with tasktable.collector_paused():
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "argv", [["service", "ps", "web"], ["node", "ps", "host-1"], ["stack", "ps", "shop"]]
)
def test_service_ps_and_node_ps_fetch_and_print_with_the_collector_paused(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """``service ps``, ``node ps`` and ``stack ps`` (its services' tasks) read the rows in
    pieces as they come (``list_tasks``), the collector paused."""
    from click.testing import CliRunner
    from shoal.cli import stack_cmd
    from shoal.cli.root import cli

    control = _control()
    monkeypatch.setattr(
        stack_cmd, "_stack_services", lambda ctx, namespace: [{"ID": "svcweb", "Name": "shop_web"}]
    )
    seen: list[tuple[str, bool]] = []

    def call_in_pieces(client: object, method: str, params: dict[str, Any], on_piece: Any) -> Any:
        seen.append(("call", gc.isenabled()))
        assert method == "service.ps" and params["compact"] is True and params["pieces"] is True
        result = _ps(control, **{key: value for key, value in params.items() if key != "pieces"})
        rows, result["rows"] = result["rows"], []
        on_piece(result, rows)  # as the pieces come
        return result

    real_table = tasktable._echo_table

    def table(*args: Any) -> None:
        seen.append(("print", gc.isenabled()))
        real_table(*args)

    monkeypatch.setattr(tasktable, "call_in_pieces", call_in_pieces)
    monkeypatch.setattr(tasktable, "_echo_table", table)
    shown = CliRunner().invoke(cli, ["-H", "unix:///nowhere.sock", *argv])
    assert shown.exit_code == 0, shown.output
    assert seen == [("call", False), ("print", False)]
    assert gc.isenabled() and shown.output.startswith("ID ")


def _raw_ps(control: ControlAPI, **params: Any) -> Any:
    """The handler's reply as it is (not through JSON): its row objects are compared."""
    return asyncio.run(control.handlers()["service.ps"](params))


def test_a_repeated_listing_reuses_the_rows_of_unchanged_tasks_and_rebuilds_changed_ones() -> None:
    control = _control()
    params: dict[str, Any] = {"services": ["web", "agent"], "compact": True}
    first = _raw_ps(control, **params)["rows"]
    second = _raw_ps(control, **params)["rows"]
    by_id = {row[0]: row for row in first}
    # Rows of tasks that carry their service's name (slot 3's) are reused as they are; the
    # others' name comes from the service, which the row alone cannot vouch for.
    assert {row[0] for row in second if row is by_id[row[0]]} == {
        "web3x0aaaaaaaaaaaaaaaa",
        "web3x1aaaaaaaaaaaaaaaa",
        "web3x2aaaaaaaaaaaaaaaa",
    }

    def change(tx: Tx) -> None:
        task = tx.task("web3x2aaaaaaaaaaaaaaaa")
        assert task is not None
        task = pb.Task.FromString(task.SerializeToString())
        task.status.state = states.FAILED
        task.status.err = "changed"
        tx.update(task)
        node = pb.Node.FromString(control.store.view.nodes.items["node0"].SerializeToString())
        node.description.hostname = "renamed-0"
        tx.update(node)

    asyncio.run(control.store.update(change))
    third = _ps(control, **params)
    fresh = _ps(ControlAPI(control.store, node_id="node0"), **params)
    assert third == fresh  # what a manager without the kept rows answers
    rows = {row[0]: row for row in third["rows"]}
    assert rows["web3x2aaaaaaaaaaaaaaaa"][7:10] == ["Failed", pytest.approx(1003.0), "changed"]
    assert rows["web3x0aaaaaaaaaaaaaaaa"][5] == "renamed-0"  # its task unchanged, its node renamed


def test_the_kept_rows_of_removed_tasks_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasklist, "CHUNK", 1)
    control = _control()
    _raw_ps(control, services=["web"], compact=True)
    assert len(control._ps_rows.rows) == 3  # slot 3's tasks, which carry the service's name
    # Kept by version, not by the task objects: a removed service's tasks are not kept alive.
    assert not any(isinstance(part, pb.Task) for entry in control._ps_rows.rows.values() for part in entry)

    def remove(tx: Tx, task_ids: list[str]) -> None:
        for task_id in task_ids:
            tx.delete("task", task_id)

    asyncio.run(
        control.store.update(lambda tx: remove(tx, ["web3x0aaaaaaaaaaaaaaaa", "web3x1aaaaaaaaaaaaaaaa"]))
    )
    _raw_ps(control, services=["web"], compact=True)
    assert len(control._ps_rows.rows) == 3  # 3 kept <= 10 tasks + CHUNK: not worth a pass yet
    others = [f"web{slot}x{attempt}aaaaaaaaaaaaaaaa" for slot in (1, 2) for attempt in range(3)]
    others += [f"agent{n}bbbbbbbbbbbbbbbbbb" for n in range(NODES)]
    asyncio.run(control.store.update(lambda tx: remove(tx, others)))
    _raw_ps(control, services=["web"], compact=True)  # 3 kept > 1 task + CHUNK
    assert set(control._ps_rows.rows) == {"web3x2aaaaaaaaaaaaaaaa"}


@pytest.mark.parametrize("no_trunc", [False, True])
def test_quiet_prints_the_id_column_of_the_table_in_its_order(
    capsys: pytest.CaptureFixture[str], no_trunc: bool
) -> None:
    result = _ps(_control(), services=["web", "agent"], compact=True)
    tasktable.print_tasks(result, quiet=True, no_trunc=no_trunc, fmt=None)
    assert capsys.readouterr().out.splitlines() == [row[0] for row in tasktable.task_cells(result, no_trunc)]
