"""Spread scheduler: ordering, filling, preferences (Swarm's decision tree), preassigned tasks."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from shoal.proto import objects_pb2 as pb
from shoal.roles import NodeInfo, Placement, PluginContext, SchedulerProvider
from shoal.testing.scheduler import (
    GIB,
    make_node,
    make_task,
    make_tasks,
    node_infos,
    snapshot,
    verify_placements,
)
from shoal_scheduler_spread import SpreadScheduler, plugin


def schedule(tasks: Sequence[pb.Task], infos: Sequence[NodeInfo]) -> list[Placement]:
    before = snapshot(infos)
    placements = asyncio.run(SpreadScheduler().schedule(tasks, infos))
    verify_placements(tasks, before, placements)
    return placements


def per_node(placements: Sequence[Placement]) -> Counter[str]:
    return Counter(p.node_id for p in placements)


def existing(node_id: str, count: int, service_id: str = "svc") -> list[pb.Task]:
    return [
        make_task(f"{node_id}-{service_id}-{i}", service_id=service_id, node_id=node_id, state=pb.RUNNING)
        for i in range(count)
    ]


def test_factory_builds_the_provider(tmp_path: Path) -> None:
    provider = plugin.shoal_scheduler_provider(PluginContext("scheduler", "spread", tmp_path))
    assert isinstance(provider, SchedulerProvider)
    assert (provider.role, provider.api_version) == ("scheduler", 2)


def test_spreads_evenly_with_node_id_tie_break() -> None:
    infos = node_infos([make_node(name) for name in ("c", "a", "b")])
    placements = schedule(make_tasks(10), infos)
    assert per_node(placements) == {"a": 4, "b": 3, "c": 3}
    assert [p.node_id for p in placements[:4]] == ["a", "b", "c", "a"]


def test_fewest_tasks_of_the_service_first_then_total() -> None:
    nodes = [make_node("a"), make_node("b"), make_node("c")]
    tasks_on_nodes = existing("a", 2) + existing("b", 5, "other") + existing("c", 1, "other")
    placements = schedule(make_tasks(3), node_infos(nodes, tasks_on_nodes))
    assert [p.node_id for p in placements] == ["c", "b", "c"]


def test_fills_nodes_up_to_the_level_of_the_next() -> None:
    nodes = [make_node("a"), make_node("b"), make_node("c")]
    infos = node_infos(nodes, existing("b", 3) + existing("c", 3))
    placements = schedule(make_tasks(5), infos)
    assert [p.node_id for p in placements] == ["a", "a", "a", "a", "b"]
    assert {info.id: info.tasks_by_service["svc"] for info in infos} == {"a": 4, "b": 4, "c": 3}


def test_levels_nodes_swarm_would_leave_behind() -> None:
    # swarmkit's list walk gives b every task until it passes c's level, leaving a at 1;
    # always taking the best node keeps a and b level.
    infos = node_infos([make_node("a"), make_node("b"), make_node("c")], existing("c", 10))
    schedule(make_tasks(12), infos)
    assert {info.id: info.tasks_by_service["svc"] for info in infos} == {"a": 6, "b": 6, "c": 10}


def test_resources_shrink_during_the_batch() -> None:
    infos = node_infos([make_node("a", memory_bytes=3 * GIB), make_node("b", memory_bytes=GIB)])
    placements = schedule(make_tasks(5, memory_bytes=GIB), infos)
    assert per_node(placements) == {"a": 3, "b": 1, "": 1}
    (unplaced,) = [p for p in placements if not p.node_id]
    assert unplaced.reason == "insufficient resources on 2 nodes"


def test_bounded_candidates_on_a_large_cluster() -> None:
    nodes = [make_node(f"n{i:04d}") for i in range(1000)]
    busy = [t for i in range(0, 1000, 2) for t in existing(f"n{i:04d}", 1)]
    placements = schedule(make_tasks(3), node_infos(nodes, busy))
    assert [p.node_id for p in placements] == ["n0001", "n0003", "n0005"]


def test_mixed_batches_are_split_by_service_and_version() -> None:
    infos = node_infos([make_node("a"), make_node("b")])
    tasks = make_tasks(2, prefix="x", service_id="x") + make_tasks(
        2, prefix="y", service_id="y", max_replicas=1
    )
    placements = schedule(tasks, infos)
    assert all(p.node_id for p in placements)
    assert {info.id: dict(info.tasks_by_service) for info in infos} == {
        "a": {"x": 1, "y": 1},
        "b": {"x": 1, "y": 1},
    }


def test_deterministic() -> None:
    def run() -> list[tuple[str, str]]:
        nodes = [make_node(f"n{i}", labels={"zone": "ab"[i % 2]}) for i in range(7)]
        tasks = make_tasks(20, preferences=["spread=node.labels.zone"], memory_bytes=GIB)
        return [(p.task_id, p.node_id) for p in schedule(tasks, node_infos(nodes))]

    assert run() == run()


def test_preassigned_tasks_are_checked_against_their_node() -> None:
    infos = node_infos([make_node("a"), make_node("b", availability=pb.NodeSpec.DRAIN)])
    tasks = [make_task("ga", node_id="a"), make_task("gb", node_id="b"), make_task("gz", node_id="zz")]
    placements = {p.task_id: p for p in asyncio.run(SpreadScheduler().schedule(tasks, infos))}
    assert placements["ga"] == Placement("ga", "a")
    assert placements["gb"] == Placement("gb", "", "1 node not available for new tasks")
    assert placements["gz"] == Placement("gz", "", "node zz is not in the cluster")
    assert infos[0].total_tasks == 1


# --------------------------------------------------------------------------- placement preferences


def zone_nodes(layout: dict[str, int], **options: object) -> list[pb.Node]:
    return [
        make_node(f"{zone}{i}", labels={"dc": zone}, **options)  # type: ignore[arg-type]
        for zone, count in layout.items()
        for i in range(count)
    ]


def test_swarm_docs_worked_example() -> None:
    # docs: preference on datacenter with 3/2/1 nodes and 9 replicas gives 3 per datacenter.
    infos = node_infos(zone_nodes({"east": 3, "south": 2, "west": 1}))
    placements = schedule(make_tasks(9, preferences=["spread=node.labels.dc"]), infos)
    assert per_node(placements) == {"east0": 1, "east1": 1, "east2": 1, "south0": 2, "south1": 1, "west0": 3}


def test_a_full_group_passes_its_share_on() -> None:
    nodes = [
        *zone_nodes({"east": 3, "south": 2}),
        make_node("west0", labels={"dc": "west"}, memory_bytes=GIB),
    ]
    placements = schedule(
        make_tasks(9, preferences=["spread=node.labels.dc"], memory_bytes=GIB), node_infos(nodes)
    )
    by_dc = Counter(p.node_id.rstrip("0123456789") for p in placements)
    assert by_dc == {"east": 4, "south": 4, "west": 1}


def test_unlabelled_nodes_form_their_own_group() -> None:
    nodes = [*zone_nodes({"a": 2}), make_node("plain")]
    placements = schedule(make_tasks(6, preferences=["spread=node.labels.dc"]), node_infos(nodes))
    assert per_node(placements) == {"a0": 2, "a1": 1, "plain": 3}


def test_existing_tasks_count_towards_their_group() -> None:
    nodes = zone_nodes({"a": 2, "b": 2})
    infos = node_infos(nodes, existing("a0", 2) + existing("a1", 2))
    placements = schedule(make_tasks(6, preferences=["spread=node.labels.dc"]), infos)
    assert per_node(placements) == {"b0": 3, "b1": 2, "a0": 1}


def test_a_group_with_no_eligible_node_gets_nothing() -> None:
    nodes = [*zone_nodes({"a": 2}), *zone_nodes({"b": 2}, availability=pb.NodeSpec.DRAIN)]
    placements = schedule(make_tasks(4, preferences=["spread=node.labels.dc"]), node_infos(nodes))
    assert per_node(placements) == {"a0": 2, "a1": 2}


def test_nested_preferences() -> None:
    nodes = [
        make_node(f"{dc}-{rack}-{i}", labels={"dc": dc, "rack": rack})
        for dc, racks in (("x", ("r1", "r2")), ("y", ("r1",)))
        for rack in racks
        for i in range(2)
    ]
    tasks = make_tasks(8, preferences=["spread=node.labels.dc", "spread=node.labels.rack"])
    placements = schedule(tasks, node_infos(nodes))
    counts = per_node(placements)
    assert sum(n for node, n in counts.items() if node.startswith("x-")) == 4
    assert sum(n for node, n in counts.items() if node.startswith("y-")) == 4
    assert counts["x-r1-0"] + counts["x-r1-1"] == 2
    assert counts["x-r2-0"] + counts["x-r2-1"] == 2
    assert counts["y-r1-0"] == counts["y-r1-1"] == 2


def test_engine_label_preference_and_invalid_preferences_ignored() -> None:
    nodes = [
        make_node("s1", engine_labels={"disk": "ssd"}),
        make_node("s2", engine_labels={"disk": "ssd"}),
        make_node("h1", engine_labels={"disk": "hdd"}),
    ]
    tasks = make_tasks(4, preferences=["spread=engine.labels.disk", "binpack=whatever"])
    placements = schedule(tasks, node_infos(nodes))
    assert per_node(placements) == {"h1": 2, "s1": 1, "s2": 1}
