"""``node ls`` and ``service ls`` cost O(nodes) and O(services), not a pass over every task
or a membership lookup per worker (issue 18: ``bench_hollow`` polling both twice a second was
a sixth of the leader's loop while 10,000 replicas started on 1,000 nodes)."""

from __future__ import annotations

import random

import pytest
from shoal import states
from shoal.manager.controlapi import ControlAPI
from shoal.manager.servicecounts import ServiceTaskCounts
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, ReadView, Tx, copy
from shoal.testing.objectstore import instant_store


def _service(service_id: str, *, global_mode: bool = False) -> pb.Service:
    service = pb.Service(id=service_id, spec_version=1)
    service.spec.annotations.name = service_id
    if global_mode:
        getattr(service.spec, "global").SetInParent()  # a Python keyword
    else:
        service.spec.replicated.replicas = 7
    return service


def _task(number: int, service_id: str, state: int, desired: int) -> pb.Task:
    task = pb.Task(id=f"t{number}", service_id=service_id, slot=number, node_id="n1")
    task.desired_state = desired  # type: ignore[assignment]
    task.status.state = state  # type: ignore[assignment]
    return task


def _truth(view: ReadView, service_id: str) -> tuple[int, int]:
    tasks = view.service_tasks(service_id)
    running = sum(1 for t in tasks if t.status.state == states.RUNNING and t.desired_state == states.RUNNING)
    return running, sum(1 for t in tasks if t.desired_state == states.RUNNING)


async def test_service_task_counts_follow_every_change() -> None:
    """Random creates, state changes, moves between services and deletes: after each write
    the kept counts are what a pass over the tasks finds."""
    rng = random.Random(18)
    store = await instant_store()
    counts = store.derived(ServiceTaskCounts)
    choices = [states.NEW, states.ASSIGNED, states.RUNNING, states.FAILED]
    desires = [states.RUNNING, states.SHUTDOWN, states.REMOVE]

    def change(tx: Tx, number: int) -> None:
        tasks = list(tx.view.tasks.all())
        roll = rng.random()
        if roll < 0.4 or not tasks:
            tx.create(_task(number, rng.choice("ab"), rng.choice(choices), rng.choice(desires)))
            return
        current = tx.task(rng.choice(tasks).id)
        if current is None:
            return
        if roll < 0.5:
            tx.delete("task", current.id)
            return
        task = copy(current)
        task.status.state = rng.choice(choices)  # type: ignore[assignment]
        task.desired_state = rng.choice(desires)  # type: ignore[assignment]
        if roll > 0.95:
            task.service_id = rng.choice("ab")
        tx.update(task)

    for number in range(300):
        await store.update(lambda tx, number=number: change(tx, number))
        for service_id in "ab":
            assert (counts.running(service_id), counts.desired(service_id)) == _truth(store.view, service_id)
    counts.restored()
    for service_id in "ab":
        assert (counts.running(service_id), counts.desired(service_id)) == _truth(store.view, service_id)


async def _listing_store() -> ObjectStore:
    store = await instant_store()

    def seed(tx: Tx) -> None:
        tx.create(_service("web"))
        tx.create(_service("agent", global_mode=True))
        for number in range(40):
            state = states.RUNNING if number % 4 else states.ASSIGNED
            desired = states.RUNNING if number % 5 else states.SHUTDOWN
            tx.create(_task(number, "web" if number % 2 else "agent", state, desired))
        for number in range(3):
            node = pb.Node(id=f"n{number}", role=pb.NodeSpec.MANAGER if number == 0 else pb.NodeSpec.WORKER)
            node.description.hostname = f"host{number}"
            if number == 2:  # being promoted: already asked about
                node.spec.desired_role = pb.NodeSpec.MANAGER
            tx.create(node)
        for number in range(3, 50):
            node = pb.Node(id=f"n{number}", role=pb.NodeSpec.WORKER)
            node.description.hostname = f"host{number}"
            tx.create(node)

    await store.update(seed)
    return store


async def test_service_ls_passes_over_no_task(monkeypatch: pytest.MonkeyPatch) -> None:
    store = await _listing_store()
    api = ControlAPI(store, "n0")
    expected = {name: _truth(store.view, name) for name in ("web", "agent")}
    scans: list[str] = []
    original = ReadView.service_tasks

    def counted(self: ReadView, service_id: str) -> list[pb.Task]:
        scans.append(service_id)
        return original(self, service_id)

    monkeypatch.setattr(ReadView, "service_tasks", counted)
    for _ in range(3):
        rows = {row["Name"]: row for row in await api.handlers()["service.ls"]({})}
        assert rows["web"]["Replicas"] == f"{expected['web'][0]}/7"
        assert rows["agent"]["Replicas"] == "{}/{}".format(*expected["agent"])
    assert scans == []  # before: one pass per replicated service, two per global one, per listing


async def test_node_ls_asks_the_store_membership_about_managers_only() -> None:
    store = await _listing_store()
    asked: list[str] = []

    def manager_status(node: pb.Node) -> str:
        asked.append(node.id)
        return "Leader" if node.id == "n0" else ""

    api = ControlAPI(store, "n0", manager_status)
    rows = await api.handlers()["node.ls"]({})
    assert len(rows) == 50
    assert {row["ID"]: row["ManagerStatus"] for row in rows}["n0"] == "Leader"
    assert sorted(asked) == ["n0", "n2"]  # before: all 50 nodes
