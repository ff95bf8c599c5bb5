"""The kernel's one RPC authorisation check (``shoal.rpc``): certificate and store together.

Logic only, over an in-memory object store: removed nodes, demoted managers, lagging replicas,
the guard every served method goes through, and the removed-node list written by ``node rm``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from shoal import rpc
from shoal.daemon.manager import Manager
from shoal.manager.controlapi import ControlAPI
from shoal.proto import objects_pb2 as pb
from shoal.roles.store import STORE_PEER_METHOD_PREFIX
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode
from shoal.store.memory import ObjectStore, Tx, copy

Access = rpc.Access
CLUSTER = "c1"


class InstantLog:
    """A logic-only stand-in for a store provider: every proposal commits at once."""

    role: ClassVar[str] = "store"
    member_id = 1

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.index = 0
        self.batches = 0

    async def propose(self, entry: bytes) -> int:
        self.index += 1
        self.batches += 1
        self.store.apply(self.index, entry)
        return self.index


async def _store() -> tuple[ObjectStore, InstantLog]:
    store = ObjectStore()
    log = InstantLog(store)
    store.provider = log  # type: ignore[assignment]

    def seed(tx: Tx) -> None:
        tx.create(pb.Cluster(id=CLUSTER))
        tx.create(
            pb.Node(id="m1", role=pb.NodeSpec.MANAGER, spec=pb.NodeSpec(desired_role=pb.NodeSpec.MANAGER))
        )
        tx.create(pb.Node(id="w1", role=pb.NodeSpec.WORKER))
        # Demoted: a worker now, though its certificate still says manager.
        tx.create(pb.Node(id="d1", role=pb.NodeSpec.WORKER))
        # Promoted, certificate renewed on the leader; this replica has only seen the promotion.
        tx.create(
            pb.Node(id="p1", role=pb.NodeSpec.WORKER, spec=pb.NodeSpec(desired_role=pb.NodeSpec.MANAGER))
        )
        tx.create(pb.Node(id="gone", role=pb.NodeSpec.WORKER, status=pb.NodeStatus(state=pb.NodeStatus.DOWN)))

    await store.update(seed)
    return store, log


def manager(node_id: str, cluster: str = CLUSTER) -> PeerIdentity:
    return PeerIdentity(node_id=node_id, role=rpc.MANAGER_OU, cluster_id=cluster)


def worker(node_id: str) -> PeerIdentity:
    return PeerIdentity(node_id=node_id, role=rpc.WORKER_OU, cluster_id=CLUSTER)


def outcome(store: ObjectStore, peer: PeerIdentity | None, access: Access) -> str:
    """ "ok", or the refusal's message."""
    try:
        rpc.authorize(peer, access, cluster_id=CLUSTER, view=store.view)
    except RPCError as exc:
        assert exc.code == StatusCode.PERMISSION_DENIED, exc
        return exc.message
    return "ok"


async def test_certificate_alone_is_not_enough() -> None:
    store, _ = await _store()
    # A current manager and a worker: what their certificates say.
    for access in Access:
        assert outcome(store, manager("m1"), access) == "ok"
    assert outcome(store, worker("w1"), Access.NODE) == "ok"
    assert "needs swarm-manager" in outcome(store, worker("w1"), Access.MANAGER)
    assert "needs swarm-manager" in outcome(store, worker("w1"), Access.STORE_PEER)
    # No certificate: only the public and join calls.
    assert outcome(store, None, Access.PUBLIC) == outcome(store, None, Access.JOIN) == "ok"
    for access in (Access.NODE, Access.MANAGER, Access.STORE_PEER):
        assert "certificate is required" in outcome(store, None, access)
    assert "belongs to cluster 'other'" in outcome(store, manager("m1", "other"), Access.NODE)


async def test_demoted_manager_certificate_counts_as_a_workers() -> None:
    store, _ = await _store()
    assert outcome(store, manager("d1"), Access.NODE) == "ok"
    assert outcome(store, manager("d1"), Access.JOIN) == "ok"  # renews, as a worker
    assert "it was demoted" in outcome(store, manager("d1"), Access.MANAGER)
    assert "no longer a member" in outcome(store, manager("d1"), Access.STORE_PEER)
    assert rpc.effective_role(manager("d1"), store.view.nodes.get("d1") or pb.Node()) == rpc.WORKER_OU


async def test_lagging_replica_admits_new_store_members_but_not_removed_ones() -> None:
    store, _ = await _store()
    # A manager this replica has not heard of yet (joined moments ago), or one promoted whose
    # role change has not arrived: store traffic passes, nothing else.
    assert outcome(store, manager("new"), Access.STORE_PEER) == "ok"
    assert outcome(store, manager("p1"), Access.STORE_PEER) == "ok"
    assert "not a member" in outcome(store, manager("new"), Access.NODE)
    assert "not a member" in outcome(store, manager("new"), Access.MANAGER)

    def removed(tx: Tx) -> None:
        rpc.record_removed(tx, ["new"], "node rm")

    await store.update(removed)
    for access in (Access.NODE, Access.MANAGER, Access.STORE_PEER, Access.JOIN):
        assert "no longer a member" in outcome(store, manager("new"), access)


async def test_node_rm_lists_the_node_in_the_same_commit() -> None:
    store, log = await _store()
    control = ControlAPI(store, "m1")
    before = log.batches
    await control.handlers()["node.rm"]({"nodes": ["gone"], "force": True})
    assert log.batches == before + 1
    cluster = store.view.cluster()
    assert cluster is not None and cluster.removed_nodes["gone"].reason == "node rm"
    assert store.view.nodes.get("gone") is None
    for peer in (manager("gone"), worker("gone")):
        for access in (Access.NODE, Access.MANAGER, Access.STORE_PEER, Access.JOIN):
            assert "was removed from the swarm" in outcome(store, peer, access)


async def test_guard_refuses_a_method_without_an_access_rule() -> None:
    async def handler(request: bytes, peer: PeerIdentity | None) -> bytes:
        return b""

    with pytest.raises(rpc.UnguardedMethod, match="has no access rule"):
        rpc.guard({"/shoal.New/Call": handler}, {}, lambda method, peer: None)


async def test_guarded_stream_ends_when_its_caller_is_removed() -> None:
    store, _ = await _store()
    check = rpc.checker(CLUSTER, lambda: store.view)

    async def ticks(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        while True:
            yield b"tick"

    _, streams = rpc.guard({}, {rpc.SESSION: ticks}, check)
    stream = streams[rpc.SESSION](b"", worker("w1"))
    assert await stream.__anext__() == b"tick"

    def remove(tx: Tx) -> None:
        tx.delete("node", "w1")
        rpc.record_removed(tx, ["w1"], "node rm")

    await store.update(remove)
    with pytest.raises(RPCError) as refused:
        await stream.__anext__()
    assert refused.value.code == StatusCode.PERMISSION_DENIED


class _Unused:
    """Providers the handler table is built with but that a refused call never reaches."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a refused call reached the provider ({name})")


#: The store provider's own replication methods (a store that replicates itself serves them).
STORE_PROBE = STORE_PEER_METHOD_PREFIX + "Probe"
STORE_PROBE_STREAM = STORE_PEER_METHOD_PREFIX + "ProbeStream"


class _PeerStore(_Unused):
    """A store provider that serves methods of its own to the other managers."""

    def rpc_handlers(self) -> tuple[dict[str, Any], dict[str, Any]]:
        async def probe(request: bytes, peer: Any) -> bytes:
            raise AssertionError("a refused call reached the store's own method")

        async def probe_stream(request: bytes, peer: Any) -> Any:
            raise AssertionError("a refused call reached the store's own stream")
            yield b""

        return {STORE_PROBE: probe}, {STORE_PROBE_STREAM: probe_stream}


async def test_every_method_the_manager_serves_is_authorised(tmp_path: Path) -> None:
    """Built from the manager's real handler table: a caller from another cluster, a removed
    node and a demoted manager are refused by every method but the public ones."""
    mgr = Manager(
        node_id="m1",
        cluster_id=CLUSTER,
        advertise_addr="127.0.0.1:1",
        store_provider=_PeerStore(),  # type: ignore[arg-type]
        ca=_Unused(),  # type: ignore[arg-type]
        scheduler_factory=_Unused,  # type: ignore[arg-type]
        transport=_Unused(),  # type: ignore[arg-type]
        tls=_Unused,  # type: ignore[arg-type]
        state_dir=tmp_path,
    )
    store, _ = await _store()
    mgr.store = store

    def remove(tx: Tx) -> None:
        node = tx.node("gone")
        assert node is not None
        tx.update(copy(node))
        rpc.record_removed(tx, ["gone"], "node rm")

    await store.update(remove)
    unary, streams = mgr.rpc_handlers()
    assert set(unary) | set(streams) <= set(rpc.ACCESS) | {STORE_PROBE, STORE_PROBE_STREAM}
    assert STORE_PROBE in unary and STORE_PROBE_STREAM in streams
    callers = [manager("m1", "other"), manager("gone"), worker("gone")]
    for method, handler in unary.items():
        if rpc.ACCESS.get(method) is Access.PUBLIC:
            continue
        for peer in callers:
            with pytest.raises(RPCError) as refused:
                await handler(b"", peer)
            assert refused.value.code == StatusCode.PERMISSION_DENIED, (method, peer)
    for method, stream in streams.items():
        for peer in callers:
            with pytest.raises(RPCError) as refused:
                await stream(b"", peer).__anext__()
            assert refused.value.code == StatusCode.PERMISSION_DENIED, (method, peer)
    # A demoted manager: worker-level methods only.
    for method in (rpc.CONTROL, STORE_PROBE, rpc.STORE_JOIN):
        with pytest.raises(RPCError) as refused:
            await unary[method](b"", manager("d1"))
        assert refused.value.code == StatusCode.PERMISSION_DENIED, method
