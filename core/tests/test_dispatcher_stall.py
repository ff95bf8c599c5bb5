"""The leader's own stall is not a node's missed heartbeat (issue 18).

At 30,000 tasks on 300 hollow nodes the leader's event loop was late by seconds at a time:
every heartbeat waited behind it. A heartbeat monitor that counted that time against the nodes
marked live nodes Down and had their tasks replaced, more work for a leader already behind."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from shoal import rpc, states
from shoal.ids import new_id
from shoal.manager import dispatcher as dispatcher_module
from shoal.manager.dispatcher import (
    MAX_STATUS_PER_COMMIT,
    STATUS_FLUSH_BURST,
    STATUS_FLUSH_INTERVAL,
    Dispatcher,
    _Session,
)
from shoal.pacing import Pacer
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import PeerIdentity
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import InstantLog

PERIOD = 0.2  # heartbeat period: a node is Down 3 periods (0.6 s) after its last heartbeat
#: The simulated stall of the leader's loop: twice a node's expiry.
STALL = 2 * 3 * PERIOD


async def _store() -> ObjectStore:
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]

    def seed(tx: Tx) -> None:
        cluster = pb.Cluster(id="c1")
        cluster.spec.dispatcher.heartbeat_period = PERIOD
        tx.create(cluster)
        tx.create(pb.Node(id="w1", role=pb.NodeSpec.WORKER))

    await store.update(seed)
    return store


def _state(store: ObjectStore) -> int:
    node = store.view.nodes.get("w1")
    assert node is not None
    return node.status.state


def _hold_the_loop(seconds: float) -> None:
    """A synchronous stretch on the event loop, as a leader's long step (the stall itself)."""
    time.sleep(seconds)


async def _rounds_after(dispatcher: Dispatcher, rounds: int, deadline: float = 30.0) -> None:
    target = dispatcher.monitor_rounds + rounds
    end = time.monotonic() + deadline
    while dispatcher.monitor_rounds < target:
        assert time.monotonic() < end, "the heartbeat monitor stopped"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _node_session() -> AsyncIterator[tuple[ObjectStore, Dispatcher, PeerIdentity, str]]:
    """A started leader's dispatcher past its start-up grace, with w1's session open: the
    store, the dispatcher, w1's identity and its session ID; both stopped on the way out."""
    store = await _store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    dispatcher.start()
    dispatcher._started_at -= 60  # past the start-up grace
    peer = PeerIdentity(node_id="w1", role=rpc.WORKER_OU, cluster_id="c1")
    stream = dispatcher.session(rpb.SessionRequest().SerializeToString(), peer)
    try:
        first = rpb.SessionMessage.FromString(await stream.__anext__())
        yield store, dispatcher, peer, first.session_id
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await dispatcher.stop()


async def _until_down(store: ObjectStore, why: str) -> None:
    """Wait for w1 to be marked Down; generous: a loaded machine makes every round late, and
    lateness extends the expiry."""
    end = time.monotonic() + 30
    while _state(store) != pb.NodeStatus.DOWN:
        assert time.monotonic() < end, why
        await asyncio.sleep(0.02)


async def test_a_stall_of_the_leader_does_not_mark_a_heartbeating_node_down() -> None:
    async with _node_session() as (store, dispatcher, peer, session_id):
        beat = rpb.HeartbeatRequest(session_id=session_id).SerializeToString()
        await dispatcher.heartbeat(beat, peer)
        assert _state(store) == pb.NodeStatus.READY
        _hold_the_loop(STALL)  # no heartbeat can come in meanwhile
        await _rounds_after(dispatcher, 2)  # the monitor has looked since, twice
        assert _state(store) == pb.NodeStatus.READY, "a live node marked Down for the leader's own stall"
        await dispatcher.heartbeat(beat, peer)  # its heartbeat, served once the loop is free
        # And a node whose heartbeats really stop is still marked Down, 3 periods after.
        await _until_down(store, "a node without heartbeats never marked Down")


async def test_a_status_flush_takes_its_batch_without_copying_the_backlog() -> None:
    """Before: each flush (ten a second) rebuilt the buffer of the updates left behind, tens
    of thousands at 100,000 tasks; now the oldest batch is taken off the front, in order."""
    store = await _store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    backlog = MAX_STATUS_PER_COMMIT * 3 + 7
    for number in range(backlog):
        dispatcher._pending_status[f"t{number}"] = ("w1", pb.TaskStatus(state=states.RUNNING))
    buffer = dispatcher._pending_status
    taken = dispatcher._take_pending_status()
    assert list(taken) == [f"t{number}" for number in range(MAX_STATUS_PER_COMMIT)], "the oldest first"
    assert dispatcher._pending_status is buffer, "the backlog was copied into a new buffer"
    assert len(buffer) == backlog - MAX_STATUS_PER_COMMIT
    while dispatcher._pending_status:
        dispatcher._take_pending_status()


async def test_a_backlog_of_whole_batches_is_flushed_without_waiting_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flush interval capped the status path at MAX_STATUS_PER_COMMIT per
    STATUS_FLUSH_INTERVAL (5,000 updates a second): a 100,000 create's reports came faster, and
    its last RUNNING reports waited seconds behind the backlog. While a whole batch waits, the
    next commit goes at once (a part batch takes the pacer's turn, as before)."""
    monkeypatch.setattr(dispatcher_module, "STATUS_FLUSH_BURST", 1)
    monkeypatch.setattr(dispatcher_module, "STATUS_FLUSH_INTERVAL", 60.0)
    store = await _store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    backlog = MAX_STATUS_PER_COMMIT * 3 + 7
    for number in range(backlog):
        dispatcher._pending_status[f"t{number}"] = ("w1", pb.TaskStatus(state=states.RUNNING))
    dispatcher.start()
    dispatcher._flush_wakeup.set()  # as UpdateTaskStatus does
    try:
        end = time.monotonic() + 30
        while dispatcher._pending_status:  # (before: one commit, then a minute's wait)
            assert time.monotonic() < end, f"{len(dispatcher._pending_status)} updates still waiting"
            await asyncio.sleep(0.01)
    finally:
        await dispatcher.stop()


async def test_a_small_services_status_commits_go_at_once_after_a_quiet_spell() -> None:
    """A service of 4 replicas makes about six status commits (its tasks' Preparing/Starting
    batches, then each Running as its container starts). Before: a burst of 3, and its last
    Running waited up to 100 ms for the next token (54-84 ms in 1 of 4-8 creates, issue 18
    item 4); none of the six waits now."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    pacer = Pacer(STATUS_FLUSH_INTERVAL, clock=lambda: 0.0, sleep=sleep, burst=STATUS_FLUSH_BURST)
    for _ in range(6):
        await pacer.pace()
    assert [w for w in waits if w > 0] == [], "a commit of a small service held back"


# ---------------------------------------------------------------------- a Down that lands late
# A node that reopened its session is not left Down by an older session's expiry. Under load (a
# 1,000-node hollow join at load 10) a node's heartbeats timed out, its agent opened a new
# session, and the Down written for the old session's expiry landed after the new registration:
# the registration had seen the node Ready and written nothing, so the node stayed Down for
# minutes while its new session heartbeated on (its tasks would be replaced elsewhere).


async def _ready_store() -> ObjectStore:
    """w1 Ready, as after its first registration."""
    store = await _store()

    def ready(tx: Tx) -> None:
        node = tx.node("w1")
        assert node is not None
        node = copy(node)
        node.status.state = pb.NodeStatus.READY
        tx.update(node)

    await store.update(ready)
    return store


def _open_session(dispatcher: Dispatcher) -> None:
    """A session of w1 as ``Dispatcher.session`` leaves it when the registration finds the
    node Ready already (nothing written)."""
    session = _Session(new_id(), "w1", time.monotonic() + 60, dispatcher.stalled)
    dispatcher._sessions[session.session_id] = session


async def test_a_node_with_a_live_session_is_not_marked_down() -> None:
    store = await _ready_store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    _open_session(dispatcher)  # reopened before the monitor's write ran
    await dispatcher._mark_down({"w1"})
    assert _state(store) == pb.NodeStatus.READY, "a node heartbeating on a new session marked Down"


async def test_a_session_opened_while_the_down_write_was_on_its_way_makes_the_node_ready_again() -> None:
    store = await _ready_store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    update = store.update
    opened: list[bool] = []

    async def racing_update(fn: Callable[[Tx], Any]) -> Any:
        def then_reopen(tx: Tx) -> Any:
            result = fn(tx)
            if not opened:  # the first write (the Down) was built; the node reopens meanwhile
                opened.append(True)
                _open_session(dispatcher)
            return result

        return await update(then_reopen)

    store.update = racing_update  # type: ignore[method-assign]
    await dispatcher._mark_down({"w1"})
    assert opened, "the Down write never ran"
    assert _state(store) == pb.NodeStatus.READY, "a node left Down while its new session is live"
    node = store.view.nodes.get("w1")
    assert node is not None and node.status.message == ""


async def test_a_node_without_a_session_is_still_marked_down() -> None:
    store = await _ready_store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    await dispatcher._mark_down({"w1"})
    node = store.view.nodes.get("w1")
    assert node is not None
    assert (node.status.state, node.status.message) == (pb.NodeStatus.DOWN, "heartbeat failure")
