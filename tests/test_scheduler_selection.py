"""``--plugin scheduler=binpack`` selects the third-party scheduler, and it places differently.

The daemon test proves the selection reaches a real cluster (recorded in the cluster object,
tasks placed and running). With one node every scheduler must pick that node, so the
comparison of placements runs the kernel's own scheduler driver over the real Raft store with
several ready nodes, each scheduler built through the plugin loader as a manager builds it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from harness import TEST_IMAGE, ShoalNode, wait_until
from shoal import placement, states
from shoal.ids import new_id
from shoal.loader import PluginLoader
from shoal.manager.orchestrator import new_task
from shoal.manager.scheduler_driver import SchedulerDriver
from shoal.proto import objects_pb2 as pb
from shoal.roles import NodeInfo
from shoal.store.memory import ObjectStore, Tx


def test_daemon_runs_with_binpack(node_factory: object) -> None:
    node: ShoalNode = node_factory()  # type: ignore[operator]
    node.start()
    node.init("--plugin", "scheduler=binpack")
    assert node.info()["Plugins"]["scheduler"] == "binpack"
    plugins = {(p["Role"], p["Name"]): p for p in node.ok("plugin", "ls", "--format", "json").json_lines()}
    assert plugins[("scheduler", "binpack")]["Distribution"] == "shoal-scheduler-binpack"
    node.ok("service", "create", "--name", "packed", "--replicas", "3", "--detach", TEST_IMAGE)
    wait_until(lambda: len(node.running("packed")) == 3, 60, what="3 tasks running under binpack")
    # The choice is fixed for the swarm: a restart with another --plugin scheduler is refused.
    node.stop()
    node.extra_args = ["--plugin", "scheduler=spread"]
    node.start(wait=False)
    assert node.proc is not None
    assert node.proc.wait(60) == 2
    assert "fixed at swarm init (binpack)" in node.log_text()
    node.extra_args = []
    node.start()
    wait_until(lambda: len(node.running("packed")) == 3, 60, what="3 tasks running after restart")


class _NotNode0(placement.Filter):
    """An extension filter: keeps tasks off node0."""

    static = True

    def check(self, info: NodeInfo) -> bool:
        return info.id != "node0"

    def explain(self, nodes: int) -> str:
        return f"node0 is reserved on {nodes} nodes"


async def place_with(
    scheduler: str, tmp_path: Path, filters: Sequence[placement.Filter] = ()
) -> Counter[str]:
    loader = PluginLoader(selection={"scheduler": scheduler})
    provider = loader.provider("scheduler", loader.make_context("scheduler", tmp_path / scheduler))
    store = ObjectStore()
    store.provider = loader.provider("store", loader.make_context("store", tmp_path / f"store-{scheduler}"))
    await store.provider.start(store, bootstrap=True)
    try:
        service = pb.Service(id=new_id(), spec_version=1)
        service.spec.annotations.name = "svc"
        service.spec.replicated.replicas = 6

        def seed(tx: Tx) -> None:
            for index in range(3):
                node = pb.Node(id=f"node{index}")
                node.status.state = pb.NodeStatus.READY
                node.description.resources.nano_cpus = 4_000_000_000
                node.description.resources.memory_bytes = 8 << 30
                tx.create(node)
            tx.create(service)
            for slot in range(1, 7):
                tx.create(new_task(service, slot))

        await store.update(seed)
        await SchedulerDriver(store, provider, filters).tick()
        tasks = list(store.view.tasks.all())
        assert all(t.status.state == states.ASSIGNED for t in tasks)
        return Counter(t.node_id for t in tasks)
    finally:
        await store.provider.stop()


@pytest.mark.asyncio
async def test_binpack_and_spread_place_differently(tmp_path: Path) -> None:
    spread = await place_with("spread", tmp_path)
    binpack = await place_with("binpack", tmp_path)
    assert sorted(spread.values()) == [2, 2, 2]
    assert sorted(binpack.values()) == [6]


@pytest.mark.parametrize("scheduler,expected", [("spread", [1, 1, 1]), ("binpack", [3])])
def test_placements_differ_on_a_real_cluster(
    node_factory: object, scheduler: str, expected: list[int]
) -> None:
    """The same service on 3 real nodes: spread puts one task per node, binpack all on one."""
    manager: ShoalNode = node_factory(name="mgr").start()  # type: ignore[operator]
    manager.init("--plugin", f"scheduler={scheduler}")
    for index, name in ((2, "w1"), (3, "w2")):
        worker: ShoalNode = node_factory(name=name, host=f"127.0.0.{index}").start()  # type: ignore[operator]
        worker.join(manager)
    wait_until(
        lambda: (
            sum(
                1 for n in manager.ok("node", "ls", "--format", "json").json_lines() if n["Status"] == "Ready"
            )
            == 3
        ),
        30,
        what="3 nodes ready",
    )
    manager.ok("service", "create", "--name", "placed", "--replicas", "3", "--detach", TEST_IMAGE)
    wait_until(lambda: len(manager.running("placed")) == 3, 60, what="3 running")
    per_node = Counter(t["Node"] for t in manager.running("placed"))
    assert sorted(per_node.values()) == expected


@pytest.mark.asyncio
@pytest.mark.parametrize("scheduler", ["spread", "binpack"])
async def test_driver_hands_extension_filters_to_the_scheduler(scheduler: str, tmp_path: Path) -> None:
    """The filters from ``shoal_node_filters`` reach the plugin through ``schedule``'s arguments."""
    placed = await place_with(scheduler, tmp_path, [_NotNode0()])
    assert "node0" not in placed and sum(placed.values()) == 6
