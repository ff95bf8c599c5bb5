"""The leader's per-change work around the store (issue 18): the entry it proposed is applied
from the objects it was built of, not parsed back; and the leader's listeners and allocations
skip what concerns no one (no task-state observer, a service on no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import pluggy
import pytest
from shoal import states
from shoal.manager import netobjects
from shoal.manager.netobjects import Allocations
from shoal.manager.observers import TaskStateObservers
from shoal.proto import objects_pb2 as pb
from shoal.store import memory
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import InstantLog, instant_store


class _CountedBatches:
    """``pb.StoreBatch`` as ``shoal.store.memory`` uses it, counting the entries it parses."""

    def __init__(self) -> None:
        self.parsed = 0

    def __call__(self, *args: Any, **kwargs: Any) -> pb.StoreBatch:
        return pb.StoreBatch(*args, **kwargs)

    def FromString(self, data: bytes) -> pb.StoreBatch:  # protobuf's name
        self.parsed += 1
        return pb.StoreBatch.FromString(data)


class _CountingProtos:
    def __init__(self, batches: _CountedBatches) -> None:
        self.StoreBatch = batches

    def __getattr__(self, name: str) -> Any:
        return getattr(pb, name)


class _CopyingLog(InstantLog):
    """Commits at once and keeps a copy of every entry (what a follower receives)."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store)
        self.entries: list[bytes] = []

    async def propose(self, entry: bytes) -> int:
        self.entries.append(bytes(bytearray(entry)))  # another object, the same bytes
        return await super().propose(entry)


async def _writes(store: ObjectStore) -> None:
    """Creates, updates (in one group), a delete: every kind of change."""
    await store.update(lambda tx: tx.create(pb.Node(id="n1")))

    def create(tx: Tx) -> None:
        for number in range(5):
            task = pb.Task(id=f"t{number}", service_id="s", slot=number + 1, node_id="n1")
            task.status.state = states.ASSIGNED
            tx.create(task)

    await store.update(create)

    def advance(tx: Tx, number: int) -> None:
        task = copy(tx.task(f"t{number}"))  # type: ignore[type-var]
        task.status.state = states.RUNNING
        tx.update(task)

    await asyncio.gather(*(store.update(lambda tx, n=n: advance(tx, n)) for n in range(5)))  # type: ignore[misc]
    await store.update(lambda tx: tx.delete("task", "t2"))


async def test_the_leader_applies_its_own_entry_without_parsing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    leader = ObjectStore()
    log = _CopyingLog(leader)
    leader.provider = log  # type: ignore[assignment]
    batches = _CountedBatches()
    monkeypatch.setattr(memory, "pb", _CountingProtos(batches))
    await _writes(leader)
    assert batches.parsed == 0  # before: every entry it proposed, parsed back when applied

    follower = ObjectStore()  # the same entries, as another object: parsed, as before
    for index, entry in enumerate(log.entries, start=1):
        follower.apply(index, entry)
    assert batches.parsed == len(log.entries)
    assert follower.snapshot() == leader.snapshot()  # the same objects, the same versions
    assert leader.view.tasks.get("t3").meta.version == follower.view.tasks.get("t3").meta.version > 0  # type: ignore[union-attr]
    assert leader.view.tasks.get("t2") is None and len(leader.view.node_tasks("n1")) == 4

    refused: list[bytes] = []

    class Refusing:
        async def propose(self, entry: bytes) -> int:
            refused.append(entry)
            raise memory.StoreUnavailable("no leader")

    leader.provider = Refusing()  # type: ignore[assignment]
    with pytest.raises(memory.StoreUnavailable):
        await leader.update(lambda tx: tx.create(pb.Node(id="n2")))
    leader.apply(log.index + 1, refused[0])  # a new leader committed it after all: parsed
    assert batches.parsed == len(log.entries) + 1
    assert leader.view.nodes.get("n2") is not None


class _Spec:
    @pluggy.HookspecMarker("shoal")
    def shoal_task_state_changed(self, task: pb.Task, old_state: int, new_state: int) -> None:
        """Told of every task state change."""


async def _observe(store: ObjectStore, hook: Any) -> None:
    observers = TaskStateObservers(store, hook)
    observers.start()
    await asyncio.sleep(0)  # its watch begins
    await store.update(lambda tx: tx.create(pb.Task(id="t1", service_id="s")))

    def run(tx: Tx) -> None:
        task = copy(tx.task("t1"))  # type: ignore[type-var]
        task.status.state = states.RUNNING
        tx.update(task)

    await store.update(run)
    for _ in range(10):  # the watch hears of the changes a few loop turns later
        await asyncio.sleep(0)
    await observers.stop()


async def test_task_state_observers_call_a_hook_only_when_something_implements_it() -> None:
    manager = pluggy.PluginManager("shoal")
    manager.add_hookspecs(_Spec)
    calls: list[str] = []
    hook = manager.hook.shoal_task_state_changed
    manager.add_hookcall_monitoring(lambda name, impls, kwargs: calls.append(name), lambda *a: None)
    await _observe(await instant_store(), hook)
    assert calls == []  # before: one call per state change, to no implementation

    told: list[tuple[str, int, int]] = []

    class Plugin:
        @pluggy.HookimplMarker("shoal")
        def shoal_task_state_changed(self, task: pb.Task, old_state: int, new_state: int) -> None:
            told.append((task.id, old_state, new_state))

    manager.register(Plugin())  # one implements it: told of each change, as before
    await _observe(await instant_store(), hook)
    assert told == [("t1", -1, states.NEW), ("t1", states.NEW, states.RUNNING)]
    assert calls == ["shoal_task_state_changed"] * 2


async def test_placing_a_task_of_a_service_on_no_network_looks_up_no_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = await instant_store()
    service = pb.Service(id="s")
    await store.update(lambda tx: tx.create(service))
    looked: list[str] = []
    real = Allocations.service_networks
    monkeypatch.setattr(
        netobjects.Allocations,
        "service_networks",
        lambda self, spec, ports: (looked.append("networks"), real(self, spec, ports))[1],
    )

    def place(tx: Tx) -> None:
        for number in range(3):
            task = pb.Task(id=f"t{number}", service_id="s")
            Allocations.of(tx).task_networks(task)
            assert not task.networks
            tx.create(task)

    await store.update(place)
    assert looked == []  # before: one look per task placed
