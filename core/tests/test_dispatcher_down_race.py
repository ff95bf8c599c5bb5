"""A node that reopened its session is not left Down by an older session's expiry (issue 18).

Under load (a 1,000-node hollow join at load 10), a node's heartbeats timed out, its agent
opened a new session, and the Down written for the old session's expiry landed after the new
registration: the registration had seen the node Ready and written nothing, so the node stayed
Down for minutes while its new session heartbeated on (its tasks would be replaced elsewhere).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shoal.ids import new_id
from shoal.manager.dispatcher import Dispatcher, _Session
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx
from shoal.testing.objectstore import InstantLog


async def _store() -> ObjectStore:
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]

    def seed(tx: Tx) -> None:
        tx.create(pb.Cluster(id="c1"))
        node = pb.Node(id="w1", role=pb.NodeSpec.WORKER)
        node.status.state = pb.NodeStatus.READY
        tx.create(node)

    await store.update(seed)
    return store


def _state(store: ObjectStore) -> int:
    node = store.view.nodes.get("w1")
    assert node is not None
    return node.status.state


def _open_session(dispatcher: Dispatcher) -> None:
    """A session of w1 as ``Dispatcher.session`` leaves it when the registration finds the
    node Ready already (nothing written)."""
    session = _Session(new_id(), "w1", time.monotonic() + 60, dispatcher.stalled)
    dispatcher._sessions[session.session_id] = session


async def test_a_node_with_a_live_session_is_not_marked_down() -> None:
    store = await _store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    _open_session(dispatcher)  # reopened before the monitor's write ran
    await dispatcher._mark_down({"w1"})
    assert _state(store) == pb.NodeStatus.READY, "a node heartbeating on a new session marked Down"


async def test_a_session_opened_while_the_down_write_was_on_its_way_makes_the_node_ready_again() -> None:
    store = await _store()
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
    store = await _store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    await dispatcher._mark_down({"w1"})
    node = store.view.nodes.get("w1")
    assert node is not None
    assert (node.status.state, node.status.message) == (pb.NodeStatus.DOWN, "heartbeat failure")
