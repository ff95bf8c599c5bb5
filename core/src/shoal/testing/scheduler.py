"""Conformance suite for scheduler providers.

Use it from your plugin's tests::

    import pytest
    from shoal.testing.scheduler import SchedulerConformance

    class TestMyScheduler(SchedulerConformance):
        @pytest.fixture
        def scheduler(self):
            return MyScheduler()

Every test then runs against your provider (the async tests carry ``pytest.mark.asyncio``, so
they run in pytest-asyncio's strict mode too). They check the contract of
``shoal.roles.SchedulerProvider.schedule``: one placement per task, every batch of the call
placed (not only the first), only nodes that pass ``shoal.placement.Pipeline`` (ready and
active, resources, constraints, host ports, max replicas, and the extension filters handed in
as ``filters``), ``NodeInfo.add_task`` called on the chosen node, no task left unplaced while
a node could still take it, and a reason for every task that fits nowhere. They do not check
*which* eligible node you choose: that is your scheduler's policy.

The helpers ``make_node``, ``make_task``, ``make_tasks``, ``node_infos`` and
``verify_placements`` are public too; use them in your own tests.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Sequence

import pytest

from shoal import placement
from shoal.proto import objects_pb2 as pb
from shoal.roles.base import API_VERSIONS
from shoal.roles.scheduler import NodeInfo, Placement, SchedulerProvider

GIB = 1024**3
MIB = 1024**2
CPU = 10**9


def make_node(
    node_id: str,
    *,
    hostname: str = "",
    state: int = pb.NodeStatus.READY,
    availability: int = pb.NodeSpec.ACTIVE,
    role: int = pb.NodeSpec.WORKER,
    labels: dict[str, str] | None = None,
    engine_labels: dict[str, str] | None = None,
    nano_cpus: int = 4 * CPU,
    memory_bytes: int = 8 * GIB,
    os: str = "linux",
    arch: str = "x86_64",
    addr: str = "",
) -> pb.Node:
    """A node object as the store would hold it (READY, ACTIVE, 4 CPUs, 8 GiB by default)."""
    node = pb.Node(id=node_id, role=role)  # type: ignore[arg-type]
    node.spec.annotations.name = hostname or node_id
    node.spec.annotations.labels.update(labels or {})
    node.spec.availability = availability  # type: ignore[assignment]
    node.spec.membership = pb.NodeSpec.ACCEPTED
    node.description.hostname = hostname or node_id
    node.description.platform.os = os
    node.description.platform.arch = arch
    node.description.resources.nano_cpus = nano_cpus
    node.description.resources.memory_bytes = memory_bytes
    node.description.engine.labels.update(engine_labels or {})
    node.status.state = state  # type: ignore[assignment]
    node.status.addr = addr
    return node


def make_task(
    task_id: str,
    *,
    service_id: str = "svc",
    spec_version: int = 1,
    slot: int = 0,
    constraints: Iterable[str] = (),
    preferences: Iterable[str] = (),
    max_replicas: int = 0,
    nano_cpus: int = 0,
    memory_bytes: int = 0,
    host_ports: Iterable[int] = (),
    node_id: str = "",
    state: int = pb.PENDING,
    desired_state: int = pb.RUNNING,
) -> pb.Task:
    """A task of ``service_id`` as the orchestrator creates it (PENDING, desired RUNNING)."""
    task = pb.Task(id=task_id, service_id=service_id, spec_version=spec_version, slot=slot, node_id=node_id)
    task.spec.container.image = "busybox:latest"
    task.spec.placement.constraints.extend(constraints)
    task.spec.placement.preferences.extend(preferences)
    task.spec.placement.max_replicas = max_replicas
    task.spec.resources.reservations.nano_cpus = nano_cpus
    task.spec.resources.reservations.memory_bytes = memory_bytes
    for port in host_ports:
        task.endpoint.ports.add(
            protocol=pb.PortConfig.TCP, target_port=port, published_port=port, publish_mode=pb.PortConfig.HOST
        )
    task.status.state = state  # type: ignore[assignment]
    task.desired_state = desired_state  # type: ignore[assignment]
    return task


def make_tasks(count: int, prefix: str = "task", **options: object) -> list[pb.Task]:
    """``count`` identical tasks (slots 1..count); ``options`` go to ``make_task``."""
    return [make_task(f"{prefix}-{i}", slot=i, **options) for i in range(1, count + 1)]  # type: ignore[arg-type]


def node_infos(nodes: Iterable[pb.Node], tasks: Iterable[pb.Task] = ()) -> list[NodeInfo]:
    """``NodeInfo``s for ``nodes`` with ``tasks`` (already on nodes) accounted, in node order."""
    return list(placement.build_node_infos(nodes, tasks).values())


def verify_placements(
    tasks: Sequence[pb.Task],
    before: Sequence[NodeInfo],
    placements: Sequence[Placement],
    extra_filters: Iterable[placement.Filter] = (),
) -> None:
    """Assert that ``placements`` is a valid answer for ``tasks`` on nodes in state ``before``.

    ``before`` must be a copy of the node infos taken before ``schedule`` ran. Every task gets
    exactly one placement; every chosen node exists and passes the pipeline at the moment the
    task is added (tasks are replayed in placement order on fresh copies); every unplaced task
    has a reason, and no node could still take it once every placement is made (a scheduler
    that gives up on part of a batch is caught here).
    """
    by_task = Counter(p.task_id for p in placements)
    assert sorted(by_task) == sorted(t.id for t in tasks), "exactly the batch's tasks must be placed"
    assert all(n == 1 for n in by_task.values()), f"a task placed twice: {by_task.most_common(1)}"
    replay = {info.id: copy.deepcopy(info) for info in before}
    tasks_by_id = {t.id: t for t in tasks}
    pipeline = placement.Pipeline(extra_filters)
    unplaced: list[pb.Task] = []
    for decision in placements:
        task = tasks_by_id[decision.task_id]
        if not decision.node_id:
            assert decision.reason, f"task {task.id} unplaced without a reason"
            unplaced.append(task)
            continue
        assert decision.node_id in replay, f"task {task.id} placed on unknown node {decision.node_id}"
        info = replay[decision.node_id]
        pipeline.set_task(task)
        assert pipeline.process(info), (
            f"task {task.id} placed on {info.id}, which the pipeline rejects: {pipeline.explain()}"
        )
        info.add_task(task)
    for task in unplaced:
        pipeline.set_task(task)
        candidates = (
            [replay[task.node_id]] if task.node_id in replay else [] if task.node_id else replay.values()
        )
        room = [info.id for info in candidates if pipeline.process(info)]
        assert not room, f"task {task.id} left unplaced although {room[0]} can still take it"


def snapshot(infos: Sequence[NodeInfo]) -> list[NodeInfo]:
    """Deep copies of ``infos``, to compare before and after ``schedule``."""
    return [copy.deepcopy(info) for info in infos]


class _RejectOddHosts(placement.Filter):
    """An extension filter used by the suite: rejects hosts whose name ends in an odd digit."""

    def check(self, info: NodeInfo) -> bool:
        return int(info.node.description.hostname[-1]) % 2 == 0

    def explain(self, nodes: int) -> str:
        return f"odd hostname on {nodes} nodes"


class SchedulerConformance:
    """What every scheduler provider must do. Override the ``scheduler`` fixture."""

    @pytest.fixture
    def scheduler(self) -> SchedulerProvider:
        pytest.fail("override the `scheduler` fixture to return your scheduler provider")

    async def _run(
        self,
        scheduler: SchedulerProvider,
        tasks: Sequence[pb.Task],
        infos: Sequence[NodeInfo],
        filters: Sequence[placement.Filter] = (),
    ) -> dict[str, Placement]:
        before = snapshot(infos)
        placements = await scheduler.schedule(tasks, infos, filters)
        verify_placements(tasks, before, placements, filters)
        return {p.task_id: p for p in placements}

    def test_declares_role(self, scheduler: SchedulerProvider) -> None:
        assert scheduler.role == "scheduler"
        assert scheduler.api_version == API_VERSIONS["scheduler"]
        assert isinstance(scheduler, SchedulerProvider)

    @pytest.mark.asyncio
    async def test_one_placement_per_task(self, scheduler: SchedulerProvider) -> None:
        infos = node_infos([make_node(f"n{i}") for i in range(3)])
        tasks = make_tasks(7)
        placed = await self._run(scheduler, tasks, infos)
        assert len(placed) == 7
        assert all(p.node_id for p in placed.values()), "7 small tasks fit on 3 empty nodes"

    @pytest.mark.asyncio
    async def test_skips_unavailable_nodes(self, scheduler: SchedulerProvider) -> None:
        nodes = [
            make_node("ready"),
            make_node("drained", availability=pb.NodeSpec.DRAIN),
            make_node("paused", availability=pb.NodeSpec.PAUSE),
            make_node("down", state=pb.NodeStatus.DOWN),
            make_node("unknown", state=pb.NodeStatus.UNKNOWN),
            make_node("disconnected", state=pb.NodeStatus.DISCONNECTED),
        ]
        placed = await self._run(scheduler, make_tasks(5), node_infos(nodes))
        assert {p.node_id for p in placed.values()} == {"ready"}

    @pytest.mark.asyncio
    async def test_respects_constraints(self, scheduler: SchedulerProvider) -> None:
        nodes = [
            make_node("eu1", labels={"zone": "eu"}),
            make_node("eu2", labels={"zone": "EU"}),
            make_node("us1", labels={"zone": "us"}),
            make_node("bare"),
            make_node("mgr", labels={"zone": "eu"}, role=pb.NodeSpec.MANAGER),
        ]
        tasks = make_tasks(6, constraints=["node.labels.zone==eu", "node.role!=manager"])
        placed = await self._run(scheduler, tasks, node_infos(nodes))
        assert {p.node_id for p in placed.values()} <= {"eu1", "eu2"}
        assert all(p.node_id for p in placed.values())

    @pytest.mark.asyncio
    async def test_respects_resources(self, scheduler: SchedulerProvider) -> None:
        nodes = [
            make_node("big", nano_cpus=2 * CPU, memory_bytes=2 * GIB),
            make_node("small", nano_cpus=2 * CPU, memory_bytes=256 * MIB),
        ]
        tasks = make_tasks(3, memory_bytes=GIB, nano_cpus=CPU // 2)
        placed = await self._run(scheduler, tasks, node_infos(nodes))
        on_big = [p for p in placed.values() if p.node_id == "big"]
        unplaced = [p for p in placed.values() if not p.node_id]
        assert len(on_big) == 2 and len(unplaced) == 1
        assert "insufficient resources on 2 nodes" in unplaced[0].reason

    @pytest.mark.asyncio
    async def test_respects_host_ports(self, scheduler: SchedulerProvider) -> None:
        busy = make_task("already", host_ports=[8080], node_id="n0", state=pb.RUNNING, service_id="other")
        nodes = [make_node(f"n{i}") for i in range(3)]
        tasks = make_tasks(3, host_ports=[8080])
        placed = await self._run(scheduler, tasks, node_infos(nodes, [busy]))
        chosen = [p.node_id for p in placed.values() if p.node_id]
        assert sorted(chosen) == ["n1", "n2"], "one host port per node, and n0 already has it"
        (unplaced,) = [p for p in placed.values() if not p.node_id]
        assert "host-mode port already in use on 3 nodes" in unplaced.reason

    @pytest.mark.asyncio
    async def test_respects_max_replicas(self, scheduler: SchedulerProvider) -> None:
        existing = make_task("old", node_id="n0", state=pb.RUNNING, max_replicas=2)
        nodes = [make_node(f"n{i}") for i in range(3)]
        tasks = make_tasks(6, max_replicas=2)
        placed = await self._run(scheduler, tasks, node_infos(nodes, [existing]))
        per_node = Counter(p.node_id for p in placed.values() if p.node_id)
        assert per_node == {"n0": 1, "n1": 2, "n2": 2}
        unplaced = [p for p in placed.values() if not p.node_id]
        assert len(unplaced) == 1 and "max replicas per node limit exceed" in unplaced[0].reason

    @pytest.mark.asyncio
    async def test_reason_when_nothing_fits(self, scheduler: SchedulerProvider) -> None:
        nodes = [
            make_node("d1", availability=pb.NodeSpec.DRAIN),
            make_node("d2", state=pb.NodeStatus.DOWN),
            make_node("w1", labels={"zone": "us"}),
        ]
        tasks = make_tasks(2, constraints=["node.labels.zone==eu"])
        placed = await self._run(scheduler, tasks, node_infos(nodes))
        for decision in placed.values():
            assert decision.node_id == ""
            assert decision.reason == (
                "2 nodes not available for new tasks; scheduling constraints not satisfied on 1 node"
            )

    @pytest.mark.asyncio
    async def test_reason_without_nodes(self, scheduler: SchedulerProvider) -> None:
        placed = await self._run(scheduler, make_tasks(2), [])
        assert all(p.node_id == "" and p.reason for p in placed.values())

    @pytest.mark.asyncio
    async def test_calls_add_task(self, scheduler: SchedulerProvider) -> None:
        infos = node_infos([make_node(f"n{i}") for i in range(4)])
        tasks = make_tasks(6, nano_cpus=CPU // 4, memory_bytes=128 * MIB)
        placed = await self._run(scheduler, tasks, infos)
        per_node = Counter(p.node_id for p in placed.values())
        for info in infos:
            count = per_node.get(info.id, 0)
            assert info.total_tasks == count
            assert info.tasks_by_service.get("svc", 0) == count
            assert info.available_nano_cpus == 4 * CPU - count * (CPU // 4)
            assert info.available_memory_bytes == 8 * GIB - count * 128 * MIB

    @pytest.mark.asyncio
    async def test_later_batches_see_earlier_ones(self, scheduler: SchedulerProvider) -> None:
        infos = node_infos([make_node("n0", memory_bytes=GIB), make_node("n1", memory_bytes=GIB)])
        first = await self._run(scheduler, make_tasks(2, prefix="a", memory_bytes=GIB), infos)
        second = await self._run(scheduler, make_tasks(1, prefix="b", memory_bytes=GIB), infos)
        assert sorted(p.node_id for p in first.values()) == ["n0", "n1"]
        assert [p.node_id for p in second.values()] == [""]

    @pytest.mark.asyncio
    async def test_places_every_batch(self, scheduler: SchedulerProvider) -> None:
        nodes = [make_node(f"n{i}") for i in range(3)]
        tasks = [
            *make_tasks(3, prefix="web", service_id="web"),
            *make_tasks(4, prefix="db", service_id="db", memory_bytes=GIB),
            *make_tasks(2, prefix="web2", service_id="web", spec_version=2),
        ]
        placed = await self._run(scheduler, tasks[::-1], node_infos(nodes))
        assert all(p.node_id for p in placed.values()), "9 tasks of 3 batches fit on 3 empty nodes"

    @pytest.mark.asyncio
    async def test_places_whole_batch(self, scheduler: SchedulerProvider) -> None:
        nodes = [make_node(f"n{i}", memory_bytes=4 * GIB) for i in range(5)]
        tasks = make_tasks(20, memory_bytes=GIB)
        placed = await self._run(scheduler, tasks, node_infos(nodes))
        assert Counter(p.node_id for p in placed.values()) == {f"n{i}": 4 for i in range(5)}

    @pytest.mark.asyncio
    async def test_applies_extension_filters(self, scheduler: SchedulerProvider) -> None:
        # One task fills a node, so the filters decide which two of the four tasks are placed.
        nodes = [make_node(f"host{i}", memory_bytes=GIB) for i in range(4)]
        filters = [_RejectOddHosts()]
        placed = await self._run(scheduler, make_tasks(4, memory_bytes=GIB), node_infos(nodes), filters)
        assert sorted(p.node_id for p in placed.values() if p.node_id) == ["host0", "host2"]
        reasons = {p.reason for p in placed.values() if not p.node_id}
        assert len(reasons) == 1 and "odd hostname on 2 nodes" in reasons.pop()
