"""The dispatcher's session stream: an agent hears of what it acts on, not of every write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from shoal import rpc
from shoal.manager import dispatcher as dispatcher_module
from shoal.manager.dispatcher import Dispatcher
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import PeerIdentity
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import InstantLog


async def _store() -> ObjectStore:
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]

    def seed(tx: Tx) -> None:
        tx.create(pb.Cluster(id="c1"))
        for node_id in ("w1", "w2"):
            tx.create(pb.Node(id=node_id, role=pb.NodeSpec.WORKER))

    await store.update(seed)
    return store


async def _change(store: ObjectStore, node_id: str, **labels: str) -> None:
    def change(tx: Tx) -> None:
        node = tx.node(node_id)
        assert node is not None
        node = copy(node)
        node.spec.annotations.labels.update(labels)
        tx.update(node)

    await store.update(change)


async def _promote(store: ObjectStore, node_id: str) -> None:
    def promote(tx: Tx) -> None:
        node = tx.node(node_id)
        assert node is not None
        node = copy(node)
        node.spec.desired_role = pb.NodeSpec.MANAGER
        tx.update(node)

    await store.update(promote)


async def _next(session: AsyncIterator[bytes]) -> rpb.SessionMessage:
    return rpb.SessionMessage.FromString(await session.__anext__())


async def test_label_changes_send_nothing_and_a_promotion_is_the_next_message() -> None:
    store = await _store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    peer = PeerIdentity(node_id="w1", role=rpc.WORKER_OU, cluster_id="c1")
    received: list[rpb.SessionMessage] = []
    started, promoted = asyncio.Event(), asyncio.Event()

    async def agent() -> None:
        async for raw in dispatcher.session(rpb.SessionRequest().SerializeToString(), peer):
            received.append(rpb.SessionMessage.FromString(raw))
            started.set()
            if received[-1].node.spec.desired_role == pb.NodeSpec.MANAGER:
                promoted.set()

    reader = asyncio.ensure_future(agent())
    try:
        await asyncio.wait_for(started.wait(), 5)
        assert received[0].managers == ["10.0.0.1:2377"]
        for i in range(3):
            await _change(store, "w1", k=f"v{i}")  # its own labels: the agent acts on none of it
            await _change(store, "w2", k=f"v{i}")  # another node's
        await _promote(store, "w1")
        await asyncio.wait_for(promoted.wait(), 5)
        # The session reads every event as it comes: a message per label change would be here.
        assert len(received) == 2
    finally:
        reader.cancel()


async def test_removing_another_node_keeps_the_session() -> None:
    store = await _store()
    managers = ["10.0.0.1:2377"]
    dispatcher = Dispatcher(store, "c1", lambda: list(managers))
    peer = PeerIdentity(node_id="w1", role=rpc.WORKER_OU, cluster_id="c1")
    session = dispatcher.session(rpb.SessionRequest().SerializeToString(), peer).__aiter__()
    await _next(session)
    managers.append("10.0.0.2:2377")  # the manager set changes with the removal below
    await store.update(lambda tx: tx.delete("node", "w2"))
    assert list((await _next(session)).managers) == managers  # news, not "w1 was removed"
    await _promote(store, "w1")
    assert (await _next(session)).node.spec.desired_role == pb.NodeSpec.MANAGER
    await session.aclose()


async def _settled(store: ObjectStore) -> None:
    """Until every committed event was published and taken by its watchers (a session takes
    an event and handles it in one step, so an empty queue means it was handled)."""

    async def wait() -> None:
        # Nothing signals "drained", so yield turns until it is (bounded by the wait_for below).
        while store._unpublished or any(not watch.queue.empty() for watch in store._watches):  # noqa: ASYNC110
            await asyncio.sleep(0)

    await asyncio.wait_for(wait(), 5)


async def test_label_changes_skip_rebuilding_views_and_a_manager_address_change_is_sent() -> None:
    store = await _store()
    rebuilt = 0

    def manager_addrs() -> list[str]:
        """As the manager builds them: from the nodes in the store."""
        nonlocal rebuilt
        rebuilt += 1
        return ["10.0.0.1:2377"] + [
            n.manager_status.addr for n in store.view.nodes.all() if n.manager_status.addr
        ]

    dispatcher = Dispatcher(store, "c1", manager_addrs)
    peer = PeerIdentity(node_id="w1", role=rpc.WORKER_OU, cluster_id="c1")
    received: asyncio.Queue[rpb.SessionMessage] = asyncio.Queue()

    async def agent() -> None:
        async for raw in dispatcher.session(rpb.SessionRequest().SerializeToString(), peer):
            received.put_nowait(rpb.SessionMessage.FromString(raw))

    reader = asyncio.ensure_future(agent())
    try:
        assert list((await asyncio.wait_for(received.get(), 5)).managers) == ["10.0.0.1:2377"]
        before = rebuilt
        for i in range(3):
            await _change(store, "w1", k=f"v{i}")
            await _change(store, "w2", k=f"v{i}")
        await _settled(store)
        assert rebuilt == before  # six label events read, no view rebuilt

        def give_w2_a_manager_address(tx: Tx) -> None:
            node = tx.node("w2")
            assert node is not None
            node = copy(node)
            node.manager_status.addr = "10.0.0.2:2377"
            tx.update(node)

        await store.update(give_w2_a_manager_address)
        message = await asyncio.wait_for(received.get(), 5)
        assert list(message.managers) == ["10.0.0.1:2377", "10.0.0.2:2377"]
        assert received.empty()
    finally:
        reader.cancel()


async def test_a_node_reopening_its_session_unchanged_writes_nothing() -> None:
    """After a leader change every node reopens its session, already Ready with the same
    description: a thousand registrations that change nothing must not be a thousand writes."""
    store = await _store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    peer = PeerIdentity(node_id="w1", role=rpc.WORKER_OU, cluster_id="c1")
    request = rpb.SessionRequest(description=pb.NodeDescription(hostname="w1")).SerializeToString()
    first = dispatcher.session(request, peer).__aiter__()
    await _next(first)
    await first.aclose()
    registered = store.applied_index
    assert store.view.nodes.get("w1").status.state == pb.NodeStatus.READY  # type: ignore[union-attr]
    again = dispatcher.session(request, peer).__aiter__()
    assert (await _next(again)).node.description.hostname == "w1"
    await again.aclose()
    assert store.applied_index == registered, "an unchanged registration was written"


async def test_a_herd_of_unchanged_reopens_takes_no_registration_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After an election every node reopens, Ready with the same description: nothing to
    write, so nothing to admit. The gate (one slot here) turned all but one away with a
    retry-after, and each came back: a second stream opened per node, while the new leader's
    loop was busiest. Now none is turned away; a node whose registration writes still is."""
    monkeypatch.setattr(dispatcher_module, "MAX_CONCURRENT_REGISTRATIONS", 1)
    store = await _store()
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"])
    peers = [PeerIdentity(node_id=node_id, role=rpc.WORKER_OU, cluster_id="c1") for node_id in ("w1", "w2")]

    def request(hostname: str) -> bytes:
        return rpb.SessionRequest(description=pb.NodeDescription(hostname=hostname)).SerializeToString()

    async def open_all(hostnames: list[str]) -> list[rpb.SessionMessage]:
        sessions = [
            dispatcher.session(request(h), p).__aiter__() for h, p in zip(hostnames, peers, strict=True)
        ]
        try:
            return list(await asyncio.gather(*(_next(session) for session in sessions)))
        finally:
            for session in sessions:
                await session.aclose()

    for peer in peers:  # registered one at a time: Ready, with their descriptions
        session = dispatcher.session(request(peer.node_id), peer).__aiter__()
        assert (await _next(session)).session_id
        await session.aclose()
    reopened = await open_all(["w1", "w2"])  # as after an election: unchanged
    assert [m.retry_after for m in reopened] == [0, 0] and all(m.session_id for m in reopened)
    changed = await open_all(["w1-renamed", "w2-renamed"])  # both write: one slot, one turned away
    assert sorted(bool(m.retry_after) for m in changed) == [False, True]
