"""Group commit in the kernel's object store: concurrent updates share one store entry, and
each transaction of a group sees exactly what the ones before it wrote (serial semantics)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from shoal.proto import objects_pb2 as pb
from shoal.roles.store import StoreUnavailable
from shoal.store import memory
from shoal.store.memory import ObjectStore, Tx, copy


class GatedLog:
    """A logic-only stand-in for a store provider: commits when the test opens the gate."""

    role: ClassVar[str] = "store"

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.proposals: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False

    async def propose(self, entry: bytes) -> int:
        self.proposals.append(entry)
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("lost leadership")
        index = len(self.proposals)
        self.store.apply(index, entry)
        return index


def make_store() -> tuple[ObjectStore, GatedLog]:
    store = ObjectStore()
    log = GatedLog(store)
    store.provider = log  # type: ignore[assignment]
    return store, log


def bump(tx: Tx) -> int:
    """Read-modify-write of a counter label: lost updates would show as a lower count."""
    node = tx.node("n1")
    assert node is not None
    node = copy(node)
    count = int(node.spec.annotations.labels.get("count", "0")) + 1
    node.spec.annotations.labels["count"] = str(count)
    tx.update(node)
    return count


async def test_concurrent_updates_share_one_entry_and_see_each_other() -> None:
    store, log = make_store()
    await store.update(lambda tx: tx.create(pb.Node(id="n1")))
    log.gate.clear()
    first = asyncio.ensure_future(store.update(bump))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(store.update(bump)) for _ in range(20)]
    await asyncio.sleep(0)
    log.gate.set()
    results = [await first, *[await r for r in rest]]
    assert results == list(range(1, 22))
    node = store.view.nodes.get("n1")
    assert node is not None and node.spec.annotations.labels["count"] == "21"
    assert len(log.proposals) == 3  # the create, the first bump, then the other 20 together


async def test_a_group_sees_earlier_creates_in_scans() -> None:
    store, log = make_store()
    log.gate.clear()
    blocker = asyncio.ensure_future(store.update(lambda tx: tx.create(pb.Node(id="n0"))))
    await asyncio.sleep(0)

    def create(tx: Tx, sid: str) -> str:
        if tx.view.service_by_name("web") is not None:
            raise ValueError("name in use")
        service = pb.Service(id=sid)
        service.spec.annotations.name = "web"
        tx.create(service)
        return sid

    a = asyncio.ensure_future(store.update(lambda tx: create(tx, "s1")))
    b = asyncio.ensure_future(store.update(lambda tx: create(tx, "s2")))
    await asyncio.sleep(0)
    log.gate.set()
    await blocker
    assert await a == "s1"
    with pytest.raises(ValueError, match="name in use"):
        await b
    assert [s.id for s in store.view.services.all()] == ["s1"]


async def test_a_failing_transaction_is_left_out_and_a_failed_commit_fails_the_group() -> None:
    store, log = make_store()
    await store.update(lambda tx: tx.create(pb.Node(id="n1")))

    def boom(tx: Tx) -> None:
        bump(tx)
        raise RuntimeError("refused")

    log.gate.clear()
    first = asyncio.ensure_future(store.update(bump))
    await asyncio.sleep(0)
    bad = asyncio.ensure_future(store.update(boom))
    good = asyncio.ensure_future(store.update(bump))
    await asyncio.sleep(0)
    log.gate.set()
    assert await first == 1
    with pytest.raises(RuntimeError):
        await bad
    assert await good == 2  # the failed transaction's bump was discarded

    log.fail_next = True
    group = [asyncio.ensure_future(store.update(bump)) for _ in range(3)]
    for fut in group:
        with pytest.raises(StoreUnavailable):
            await fut
    node = store.view.nodes.get("n1")
    assert node is not None and node.spec.annotations.labels["count"] == "2"


async def test_a_watch_with_a_predicate_queues_only_what_it_is_true_for() -> None:
    store, _ = make_store()
    with (
        store.watch(["node"], where=lambda event: event.obj.role == pb.NodeSpec.MANAGER) as managers,
        store.watch(["node"]) as every_node,
    ):
        await store.update(lambda tx: tx.create(pb.Node(id="w1", role=pb.NodeSpec.WORKER)))
        await store.update(lambda tx: tx.create(pb.Node(id="m1", role=pb.NodeSpec.MANAGER)))
        event = await asyncio.wait_for(managers.get(), 5)
        assert event.obj.id == "m1"
        assert managers.drain() == []
        assert [e.obj.id for e in [await asyncio.wait_for(every_node.get(), 5), *every_node.drain()]] == [
            "w1",
            "m1",
        ]


async def test_a_group_commit_stops_taking_transactions_at_its_bound() -> None:
    """Twelve writes of 300 changes queued behind a commit were one entry of 3,600 changes:
    at 10,000 tasks, seconds of every manager's loop to build, replicate and apply (issue 18)."""
    store, log = make_store()
    log.gate.clear()
    blocker = asyncio.ensure_future(store.update(lambda tx: tx.create(pb.Node(id="n0"))))
    await asyncio.sleep(0)

    def create_many(tx: Tx, batch: int) -> int:
        for n in range(300):
            tx.create(pb.Task(id=f"t{batch}-{n}", service_id="s"))
        return len(tx.view.tasks)  # what the transactions before it created, group or not

    writes = [asyncio.ensure_future(store.update(lambda tx, b=b: create_many(tx, b))) for b in range(12)]
    await asyncio.sleep(0)
    log.gate.set()
    await blocker
    seen = [await w for w in writes]
    assert seen == [300 * b for b in range(12)], "a transaction did not see the ones before it"
    assert len(store.view.tasks) == 3600
    sizes = [len(pb.StoreBatch.FromString(p).actions) for p in log.proposals]
    assert max(sizes) < memory.MAX_GROUP_CHANGES + 300, f"entries of {sizes} changes"


class SubmittingLog(GatedLog):
    """A stand-in provider that can also propose without awaiting (``submit``), as the raft
    store does: the entry is recorded at once, committed and applied when the gate opens."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store)
        self.refuse_next: Exception | None = None
        self._commits: set[asyncio.Task[None]] = set()

    def submit(self, entry: bytes) -> asyncio.Future[int]:
        if self.refuse_next is not None:
            exc, self.refuse_next = self.refuse_next, None
            raise exc
        self.proposals.append(entry)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        commit = asyncio.ensure_future(self._commit(entry, fut))
        self._commits.add(commit)
        commit.add_done_callback(self._commits.discard)
        return fut

    async def _commit(self, entry: bytes, fut: asyncio.Future[int]) -> None:
        await self.gate.wait()
        index = self.proposals.index(entry) + 1
        if self.fail_next:
            self.fail_next = False
            fut.set_exception(StoreUnavailable("lost leadership"))
            return
        if self.store.applied_index < index:  # a test may have applied it itself
            self.store.apply(index, entry)
        fut.set_result(index)

    async def propose(self, entry: bytes) -> int:
        return await self.submit(entry)


def make_submitting_store() -> tuple[ObjectStore, SubmittingLog]:
    store = ObjectStore()
    log = SubmittingLog(store)
    store.provider = log  # type: ignore[assignment]
    return store, log


async def test_a_lone_write_is_proposed_in_the_loop_turn_that_made_it() -> None:
    """With nothing to group it with, a write's transaction runs and its entry is proposed in
    the writer's own loop turn (before: the turn after, when the group commit's task started:
    a turn on a lone write's path)."""
    store, log = make_submitting_store()
    await store.update(lambda tx: tx.create(pb.Node(id="n1")))
    log.gate.clear()
    proposed = len(log.proposals)
    write = asyncio.ensure_future(store.update(bump))
    await asyncio.sleep(0)  # one loop turn: the writer's task ran once
    assert len(log.proposals) == proposed + 1, "the lone write was not proposed in its own turn"
    log.gate.set()
    assert await write == 1


async def test_a_writer_is_answered_in_the_loop_turn_after_its_entry_is_applied() -> None:
    """A writer resumes on the turn after its entry is applied (before: two turns, the group
    commit's task waking first to answer it)."""
    store, log = make_submitting_store()
    await store.update(lambda tx: tx.create(pb.Node(id="n1")))
    log.gate.clear()
    write = asyncio.ensure_future(store.update(bump))
    for _ in range(2):  # the write is made and proposed
        await asyncio.sleep(0)
    assert not write.done()
    store.apply(len(log.proposals), log.proposals[-1])  # what the provider does on commit
    await asyncio.sleep(0)
    assert write.done(), "the writer was not answered on the turn after its entry was applied"
    assert write.result() == 1
    log.gate.set()  # the stand-in's commit finds it applied


async def test_writes_behind_a_lone_write_share_one_entry_and_see_it() -> None:
    store, log = make_submitting_store()
    await store.update(lambda tx: tx.create(pb.Node(id="n1")))
    log.gate.clear()
    first = asyncio.ensure_future(store.update(bump))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(store.update(bump)) for _ in range(20)]
    await asyncio.sleep(0)
    log.gate.set()
    assert [await first, *[await r for r in rest]] == list(range(1, 22))
    assert len(log.proposals) == 3  # the create, the lone bump, then the other 20 together
    node = store.view.nodes.get("n1")
    assert node is not None and node.spec.annotations.labels["count"] == "21"


async def test_a_lone_write_refused_or_failed_fails_alone_and_the_next_one_commits() -> None:
    store, log = make_submitting_store()
    await store.update(lambda tx: tx.create(pb.Node(id="n1")))
    log.refuse_next = StoreUnavailable("not the leader")
    with pytest.raises(StoreUnavailable, match="not the leader"):
        await store.update(bump)
    assert await asyncio.wait_for(store.update(bump), 5) == 1  # nothing of the refused one stayed
    log.fail_next = True  # now its commit fails: the writer hears it, the next write commits
    with pytest.raises(StoreUnavailable, match="lost leadership"):
        await asyncio.wait_for(store.update(bump), 5)
    assert await asyncio.wait_for(store.update(bump), 5) == 2
