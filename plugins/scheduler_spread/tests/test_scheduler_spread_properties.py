"""Property tests: on random clusters the spread scheduler obeys the filters and spreads evenly."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.placement import Pipeline
from shoal.proto import objects_pb2 as pb
from shoal.roles import NodeInfo, Placement
from shoal.testing.scheduler import GIB, MIB, make_node, make_task, make_tasks, node_infos, verify_placements
from shoal_scheduler_spread import SpreadScheduler

SERVICE = "svc"
PORT = 8080


@dataclass(frozen=True)
class NodeShape:
    """Everything about a node except its ID: nodes with equal shapes are interchangeable."""

    ready: bool
    availability: int
    zone: str | None
    memory_gib: int
    own_tasks: int
    other_tasks: int
    port_taken: bool


@dataclass(frozen=True)
class TaskShape:
    memory_mib: int
    constraint: str | None
    max_replicas: int
    host_port: bool
    spread_zone: bool


node_shapes = st.builds(
    NodeShape,
    ready=st.sampled_from([True, True, True, False]),
    availability=st.sampled_from([pb.NodeSpec.ACTIVE] * 4 + [pb.NodeSpec.DRAIN, pb.NodeSpec.PAUSE]),
    zone=st.sampled_from([None, "a", "b", "c"]),
    memory_gib=st.integers(1, 4),
    own_tasks=st.integers(0, 3),
    other_tasks=st.integers(0, 3),
    port_taken=st.booleans(),
)
task_shapes = st.builds(
    TaskShape,
    memory_mib=st.sampled_from([0, 0, 512, 1024, 1536]),
    constraint=st.sampled_from(
        [None, None, "node.labels.zone==a", "node.labels.zone!=b", "node.role==worker"]
    ),
    max_replicas=st.sampled_from([0, 0, 1, 2, 4]),
    host_port=st.sampled_from([False, False, False, True]),
    spread_zone=st.booleans(),
)


def build(shapes: Sequence[NodeShape], shape: TaskShape, count: int) -> tuple[list[NodeInfo], list[pb.Task]]:
    nodes, placed = [], []
    for index, node_shape in enumerate(shapes):
        node_id = f"n{index:02d}"
        nodes.append(
            make_node(
                node_id,
                state=pb.NodeStatus.READY if node_shape.ready else pb.NodeStatus.DOWN,
                availability=node_shape.availability,
                labels={"zone": node_shape.zone} if node_shape.zone else {},
                memory_bytes=node_shape.memory_gib * GIB,
            )
        )
        for i in range(node_shape.own_tasks):
            placed.append(make_task(f"{node_id}-own-{i}", node_id=node_id, state=pb.RUNNING))
        for i in range(node_shape.other_tasks):
            placed.append(
                make_task(f"{node_id}-other-{i}", service_id="other", node_id=node_id, state=pb.RUNNING)
            )
        if node_shape.port_taken:
            placed.append(
                make_task(
                    f"{node_id}-port",
                    service_id="ports",
                    node_id=node_id,
                    state=pb.RUNNING,
                    host_ports=[PORT],
                )
            )
    tasks = make_tasks(
        count,
        service_id=SERVICE,
        memory_bytes=shape.memory_mib * MIB,
        constraints=[shape.constraint] if shape.constraint else [],
        max_replicas=shape.max_replicas,
        host_ports=[PORT] if shape.host_port else [],
        preferences=["spread=node.labels.zone"] if shape.spread_zone else [],
    )
    return node_infos(nodes, placed), tasks


def capacity(info: NodeInfo, task: pb.Task, limit: int) -> int:
    """How many more tasks like ``task`` the node takes, by adding them one by one."""
    info = copy.deepcopy(info)
    pipeline = Pipeline(()).set_task(task)
    taken = 0
    while taken < limit and pipeline.process(info):
        info.add_task(task)
        taken += 1
    return taken


def run(infos: list[NodeInfo], tasks: list[pb.Task]) -> list[Placement]:
    return asyncio.run(SpreadScheduler().schedule(tasks, infos))


cluster = st.tuples(st.lists(node_shapes, min_size=0, max_size=10), task_shapes, st.integers(1, 25))
property_settings = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@property_settings
@given(cluster)
def test_never_places_on_a_rejected_node_and_explains_failures(
    case: tuple[list[NodeShape], TaskShape, int],
) -> None:
    shapes, shape, count = case
    infos, tasks = build(shapes, shape, count)
    before = [copy.deepcopy(info) for info in infos]
    placements = run(infos, tasks)
    verify_placements(tasks, before, placements)  # one per task, every chosen node passes, reasons
    unplaced = [p for p in placements if not p.node_id]
    if unplaced:
        pipeline = Pipeline(()).set_task(tasks[0])
        accepted = [info.id for info in infos if pipeline.process(info)]
        assert accepted == [], "a task was left pending while a node could still take it"
        expected = pipeline.explain() or "no nodes in the cluster"
        assert {p.reason for p in unplaced} == {expected}


@property_settings
@given(cluster)
def test_places_everything_capacity_allows(case: tuple[list[NodeShape], TaskShape, int]) -> None:
    shapes, shape, count = case
    infos, tasks = build(shapes, shape, count)
    room = sum(capacity(info, tasks[0], count) for info in infos)
    placements = run(infos, tasks)
    assert sum(1 for p in placements if p.node_id) == min(count, room)


@property_settings
@given(cluster)
def test_max_replicas_respected(case: tuple[list[NodeShape], TaskShape, int]) -> None:
    shapes, shape, count = case
    infos, tasks = build(shapes, shape, count)
    before = {info.id: info.tasks_by_service.get(SERVICE, 0) for info in infos}
    placements = run(infos, tasks)
    if shape.max_replicas:
        for node_id, added in Counter(p.node_id for p in placements if p.node_id).items():
            assert before[node_id] + added <= shape.max_replicas


@property_settings
@given(cluster)
def test_equal_nodes_stay_within_one(case: tuple[list[NodeShape], TaskShape, int]) -> None:
    shapes, shape, count = case
    infos, tasks = build(shapes, shape, count)
    run(infos, tasks)
    groups: dict[NodeShape, list[int]] = defaultdict(list)
    for node_shape, info in zip(shapes, infos, strict=True):
        groups[node_shape].append(info.tasks_by_service.get(SERVICE, 0))
    for node_shape, counts in groups.items():
        assert max(counts) - min(counts) <= 1, (node_shape, counts)


@property_settings
@given(cluster)
def test_each_task_goes_to_a_least_loaded_eligible_node(case: tuple[list[NodeShape], TaskShape, int]) -> None:
    """Without preferences every choice is the best node at that moment (service count, total)."""
    shapes, shape, count = case
    infos, tasks = build(shapes, shape, count)
    replay = {info.id: copy.deepcopy(info) for info in infos}
    placements = run(infos, tasks)
    if shape.spread_zone:
        return
    pipeline = Pipeline(()).set_task(tasks[0])
    for placement in placements:
        if not placement.node_id:
            continue
        eligible = [info for info in replay.values() if pipeline.process(info)]
        best = min((info.tasks_by_service.get(SERVICE, 0), info.total_tasks) for info in eligible)
        chosen = replay[placement.node_id]
        assert (chosen.tasks_by_service.get(SERVICE, 0), chosen.total_tasks) == best
        chosen.add_task(tasks[0])


@property_settings
@given(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=9), st.integers(1, 30))
def test_preference_groups_stay_within_one(zones: list[str | None], count: int) -> None:
    """With unlimited room and a spread preference, zone totals differ by at most one."""
    nodes = [make_node(f"n{i}", labels={"zone": z} if z else {}) for i, z in enumerate(zones)]
    infos = node_infos(nodes)
    tasks = make_tasks(count, preferences=["spread=node.labels.zone"])
    run(infos, tasks)
    per_zone: Counter[str] = Counter()
    for zone, info in zip(zones, infos, strict=True):
        per_zone[zone or ""] += info.total_tasks
    assert sum(per_zone.values()) == count
    assert max(per_zone.values()) - min(per_zone.values()) <= 1
