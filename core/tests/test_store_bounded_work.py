"""The leader's store work comes in bounded pieces (issue 18).

With 1,000 hollow nodes and 10,000 replicas every manager's event loop stalled for seconds:
the dispatcher wrote every buffered status update in one transaction,
and each task event was checked against every session's node watch. These tests count the
pieces (changes per entry, watches consulted), not time."""

from __future__ import annotations

import asyncio

import pytest
from shoal import states
from shoal.manager import dispatcher as dispatcher_module
from shoal.manager.dispatcher import Dispatcher
from shoal.proto import objects_pb2 as pb
from shoal.store import memory
from shoal.store.memory import ObjectStore, Tx, Watch
from shoal.testing.objectstore import RecordingLog, instant_store


async def test_task_events_are_not_offered_to_node_watches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand sessions each watch nodes; every task event was checked against each of them
    (10,000 tasks in five states: 50 million checks on the leader's loop)."""
    store = await instant_store()
    consulted = [0]
    wants = Watch.wants

    def counted(self: Watch, event: memory.Event) -> bool:
        consulted[0] += 1
        return wants(self, event)

    monkeypatch.setattr(Watch, "wants", counted)
    sessions = [store.watch(["node", "cluster"]) for _ in range(1000)]
    tasks = store.watch(["task"])
    mixed = store.watch(["node", "task"])

    def create(tx: Tx) -> None:
        for n in range(500):
            tx.create(pb.Task(id=f"t{n}", service_id="s"))
        tx.create(pb.Node(id="n1"))

    await store.update(create)
    for _ in range(3):  # watchers hear of a commit two loop turns after it was applied
        await asyncio.sleep(0)
    assert tasks.queue.qsize() == 500
    # A watch of several kinds gets its events in commit order.
    assert [e.obj.id for e in mixed.drain()] == [*(f"t{n}" for n in range(500)), "n1"]
    assert all(s.queue.qsize() == 1 for s in sessions)
    assert consulted[0] <= 2 * 501, f"{consulted[0]} watch checks for 501 events"


async def test_status_updates_are_written_in_bounded_transactions() -> None:
    """10,000 tasks starting at once buffered thousands of status updates per 100 ms flush,
    all written as one store entry."""
    store = ObjectStore()
    log = RecordingLog(store)
    store.provider = log  # type: ignore[assignment]

    def seed(tx: Tx) -> None:
        tx.create(pb.Cluster(id="c1"))
        tx.create(pb.Node(id="w1"))
        for n in range(1200):
            tx.create(pb.Task(id=f"t{n}", node_id="w1", status=pb.TaskStatus(state=states.ASSIGNED)))

    await store.update(seed)
    log.sizes.clear()
    dispatcher = Dispatcher(store, "c1", lambda: [])
    for n in range(1200):
        dispatcher._pending_status[f"t{n}"] = ("w1", pb.TaskStatus(state=states.RUNNING, message="started"))
    flush = asyncio.ensure_future(dispatcher._flush_loop())
    dispatcher._flush_wakeup.set()
    try:
        for _ in range(600):  # at most 6 s: three paced flushes need about 0.2 s
            if all(t.status.state == states.RUNNING for t in store.view.tasks.all()):
                break
            await asyncio.sleep(0.01)
    finally:
        flush.cancel()
        await asyncio.gather(flush, return_exceptions=True)
    assert all(t.status.state == states.RUNNING for t in store.view.tasks.all())
    assert max(log.sizes) <= dispatcher_module.MAX_STATUS_PER_COMMIT, f"entries of {log.sizes} changes"
