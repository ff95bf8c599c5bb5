"""``service ps`` rows built ahead by the leader once the store is quiet (issue 18 item 2).

A first listing of 100,000 tasks waited for the leader to build every row; the rows a listing
kept made a repeat cheaper, but not the first. ``rowwarm.RowWarmer`` builds and keeps the rows
while the store is quiet, never during a burst of writes, so a first listing after the cluster
settles reuses every row. What a listing prints must not change.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shoal import states, yieldingjson
from shoal.manager import rowwarm, tasklist
from shoal.manager.controlapi import ControlAPI
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.cluster import InProcessCluster
from shoal.testing.objectstore import InstantLog

TASKS = 2 * tasklist.CHUNK + 30
NODES = 5


def _task(slot: int, node: int) -> pb.Task:
    made = pb.Task(
        id=f"web{slot:05d}aaaaaaaaaaaaaaaaa", service_id="svcweb", slot=slot, node_id=f"node{node}"
    )
    made.service_annotations.name = "web"
    made.spec.container.image = "img:1"
    made.meta.created_at = 9000.0 - slot
    made.status.timestamp = 9500.0 - slot
    made.desired_state = states.RUNNING
    made.status.state = states.RUNNING
    return made


async def _store() -> ObjectStore:
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]

    def seed(tx: Tx) -> None:
        tx.create(pb.Cluster(id="c1"))
        for n in range(NODES):
            node = pb.Node(id=f"node{n}", role=pb.NodeSpec.WORKER)
            node.description.hostname = f"host-{n}"
            tx.create(node)
        service = pb.Service(id="svcweb")
        service.spec.annotations.name = "web"
        tx.create(service)
        for slot in range(1, TASKS + 1):
            tx.create(_task(slot, slot % NODES))

    await store.update(seed)
    return store


def _warmer(
    store: ObjectStore, cache: tasklist.RowCache, clock: Callable[[], float] = time.monotonic
) -> rowwarm.RowWarmer:
    """A warmer with small quiet spans, so a test sees it act within a second."""
    return rowwarm.RowWarmer(store, cache, quiet=0.2, entries=2, poll=0.01, piece=100, clock=clock)


async def _until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {within} s"
        await asyncio.sleep(0.01)


async def _touch(store: ObjectStore, *slots: int) -> None:
    """One write: the status message of the tasks of ``slots`` changed (a new version each)."""

    def change(tx: Tx) -> None:
        for slot in slots:
            task = copy(tx.task(f"web{slot:05d}aaaaaaaaaaaaaaaaa"))
            task.status.message = f"touched {time.monotonic()}"
            tx.update(task)

    await store.update(change)


async def _listed(control: ControlAPI) -> bytes:
    streamed = await control.handlers()["service.ps"]({"services": ["web"], "compact": True, "pieces": True})
    line = b"".join([part async for part in yieldingjson.line_parts({"result": streamed})])
    await control.ps_rows.settled()
    return line


async def test_a_quiet_store_s_rows_are_built_ahead_and_a_first_listing_builds_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: 10_000.0)  # the reply's "now", compared
    store = await _store()
    control = ControlAPI(store, node_id="node0")
    warmer = _warmer(store, control.ps_rows)
    warmer.start()
    try:
        await _until(lambda: warmer.passes >= 1, "warmed")
        kept = dict(control.ps_rows.rows)
        assert set(kept) == set(store.view.tasks.items)
        built: list[int] = []
        build = tasklist._compact_rows

        def counting(*args: Any, **kwargs: Any) -> int:
            rows: list[Any] = args[3]
            before = len(rows)
            reused = build(*args, **kwargs)
            built.append(len(rows) - before - reused)
            return reused

        monkeypatch.setattr(tasklist, "_compact_rows", counting)
        line = await _listed(control)
        assert built and sum(built) == 0  # every row was kept ahead
        # The same bytes as a listing that built every row itself.
        fresh = await _listed(ControlAPI(store, node_id="node0"))
        assert line == fresh and json.loads(line)["result"]["rows"]
        assert all(control.ps_rows.rows[key] is entry for key, entry in kept.items())
    finally:
        await warmer.stop()


async def test_nothing_is_built_while_writes_come_and_changed_rows_are_built_once_quiet() -> None:
    store = await _store()
    cache = tasklist.RowCache()
    now = [0.0]
    looks = [0]

    def clock() -> float:  # the warmer's clock: read once per look at the store
        looks[0] += 1
        return now[0]

    warmer = _warmer(store, cache, clock)
    warmer.start()
    try:
        # A write every 0.05 s of the warmer's clock: more than 2 in any 0.2 s, never quiet.
        for write in range(40):
            await _touch(store, write % TASKS + 1)
            now[0] += 0.05
            seen = looks[0]
            await _until(lambda seen=seen: looks[0] > seen, "looked at")  # type: ignore[misc]
        assert not cache.rows and warmer.passes == 0
        now[0] += 1.0
        await _until(lambda: warmer.passes >= 1, "warmed once the writes stopped")
        before = dict(cache.rows)
        assert len(before) == TASKS
        await _touch(store, 7)  # one write: quiet still (at most 2 in the span)
        await _until(lambda: warmer.passes >= 2, "warmed again")
        changed = [key for key, entry in cache.rows.items() if before[key] is not entry]
        assert changed == [f"web{7:05d}aaaaaaaaaaaaaaaaa"]
        assert cache.rows[changed[0]][0] == store.view.tasks.items[changed[0]].meta.version
    finally:
        await warmer.stop()


async def test_after_its_first_pass_it_looks_only_at_the_tasks_written_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass over every task whose rows are all current cost 0.4 s of CPU at 100,000 tasks: a
    store written now and then (still quiet) paid it at every write. A node's new hostname is
    in its tasks' rows: then every task is looked at again."""
    store = await _store()
    cache = tasklist.RowCache()
    looked: list[int] = []
    build = tasklist.warm

    def counting(piece: Any, names: tasklist.Names, kept: tasklist.RowCache) -> int:
        looked.append(len(piece))
        return build(piece, names, kept)

    monkeypatch.setattr(tasklist, "warm", counting)
    warmer = _warmer(store, cache)
    warmer.start()
    try:
        await _until(lambda: warmer.passes >= 1, "warmed")
        assert sum(looked) == TASKS
        looked.clear()
        await _touch(store, 3, 4)
        await _until(lambda: warmer.passes >= 2, "warmed again")
        assert sum(looked) == 2
        looked.clear()

        def rename(tx: Tx) -> None:
            node = copy(tx.node("node1"))
            node.description.hostname = "renamed"
            tx.update(node)

        await store.update(rename)
        await _until(lambda: warmer.passes >= 3, "warmed after the rename")
        assert sum(looked) == TASKS
        on_node1 = [
            entry for key, entry in cache.rows.items() if store.view.tasks.items[key].node_id == "node1"
        ]
        assert on_node1 and all(entry[1] == "renamed" for entry in on_node1)
        # More tasks written than FULL_AFTER (a burst: a create): every task, by service and slot.
        looked.clear()
        monkeypatch.setattr(rowwarm, "FULL_AFTER", 5)
        await _touch(store, *range(10, 16))
        assert warmer._full and not warmer._changed  # (no more IDs collected meanwhile)
        await _until(lambda: warmer.passes >= 4, "warmed after the burst")
        assert sum(looked) == TASKS
    finally:
        await warmer.stop()
    assert warmer.store._listeners == []  # (stopped: it no longer hears of applies)


async def test_a_pass_stops_at_the_first_piece_that_finds_the_store_busy() -> None:
    store = await _store()
    cache = tasklist.RowCache()
    warmer = rowwarm.RowWarmer(store, cache, piece=100)
    looks = iter([True, True, True, False])

    class Pace:
        def quiet(self) -> bool:
            return next(looks)

    assert not await warmer._pass(Pace())  # type: ignore[arg-type]
    assert len(cache.rows) == 300  # the three pieces built before it, kept


async def test_a_newer_kept_row_is_not_replaced_by_an_older_task_s() -> None:
    store = await _store()
    cache = tasklist.RowCache()
    old = store.view.tasks.items[f"web{3:05d}aaaaaaaaaaaaaaaaa"]
    await _touch(store, 3)
    names = tasklist.Names(store.view)
    assert tasklist.warm([store.view.tasks.items[old.id]], names, cache) == 1
    newer = cache.rows[old.id]
    assert tasklist.warm([old], names, cache) == 0  # (a pass's piece taken before the write)
    assert cache.rows[old.id] is newer
    assert tasklist.warm([store.view.tasks.items[old.id]], names, cache) == 0  # current: kept


async def test_the_pace_is_quiet_after_its_span_with_few_entries() -> None:
    store = await _store()
    now = [100.0]
    pace = rowwarm._Pace(store, 2.0, 1, lambda: now[0])
    assert not pace.quiet()  # not watched for the span yet
    now[0] = 102.0
    assert pace.quiet()
    await _touch(store, 1)
    assert pace.quiet()  # one entry in the span: still quiet
    await _touch(store, 2)
    now[0] = 103.0
    assert not pace.quiet()  # two entries since the look of 102: busy
    now[0] = 103.9
    assert not pace.quiet()  # the look of 101.9 or before saw neither
    now[0] = 105.5
    assert pace.quiet()


async def test_the_leader_warms_its_rows(tmp_path: Path) -> None:
    async with InProcessCluster(tmp_path, managers=1, workers=1) as cluster:
        await cluster.call("service.create", name="web", image="app:1", replicas=3)
        await cluster.wait_for_running("web", 3)
        node = cluster.leader()
        assert node is not None and node.daemon.manager is not None
        manager = node.daemon.manager
        store = manager.store
        rows = manager.control.ps_rows.rows

        def warm() -> bool:
            return all(
                key in rows and rows[key][0] == task.meta.version
                for key, task in store.view.tasks.items.items()
            )

        await _until(warm, "the leader's rows kept ahead", within=20.0)
