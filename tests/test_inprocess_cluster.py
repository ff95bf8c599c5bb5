"""Orchestration logic on a whole cluster in one process (``shoal.testing.cluster``).

Real daemons (store, CA, orchestrator, updater, scheduler, dispatcher, agents, mutual-TLS
checks) on the memory transport and the fake runtime: the same claims as the slow real-engine
tests of spreading, draining, restart policies, rolling updates and re-adoption, about the
logic rather than the engine, in well under a second each. The real-engine tests in
test_service_lifecycle.py, test_multi_node.py and test_single_node.py still prove each
capability once on docker and podman.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from shoal.cli.main import task_rows
from shoal.daemon.localapi import APIError
from shoal.manager.orchestrator import ReplicatedOrchestrator
from shoal.roles.transport import StatusCode
from shoal.store.memory import Watch
from shoal.testing.cluster import InProcessCluster

IMAGE_1, IMAGE_2 = "app:1", "app:2"


async def running_by_node(cluster: InProcessCluster, service: str) -> Counter[str]:
    return Counter(
        t["Node"]
        for t in await cluster.tasks(service)
        if t["DesiredState"] == "Running" and t["State"] == "Running"
    )


async def images_running(cluster: InProcessCluster, service: str) -> Counter[str]:
    return Counter(
        t["Image"]
        for t in await cluster.tasks(service)
        if t["DesiredState"] == "Running" and t["State"] == "Running"
    )


async def update_state(cluster: InProcessCluster, service: str) -> tuple[str, str]:
    status: dict[str, Any] = (await cluster.call("service.inspect", services=[service]))[0].get(
        "update_status", {}
    )
    return str(status.get("state", "")).upper(), str(status.get("message", ""))


async def test_spread_drain_and_worker_constraint(tmp_path: Path) -> None:
    """Spread evenly, move everything off a drained node, keep a constraint (the logic of
    test_multi_node.py::test_spread_drain_and_worker_constraint)."""
    async with InProcessCluster(tmp_path, managers=1, workers=2) as cluster:
        await cluster.call("service.create", name="six", image=IMAGE_1, replicas=6, stop_grace_period="0s")
        await cluster.wait_until(
            lambda: _equals(running_by_node(cluster, "six"), Counter({"m1": 2, "w1": 2, "w2": 2})), "2/2/2"
        )
        await cluster.call("node.update", node="m1", availability="drain")
        await cluster.wait_until(
            lambda: _equals(running_by_node(cluster, "six"), Counter({"w1": 3, "w2": 3})), "3/3 after drain"
        )
        await cluster.call("node.update", node="m1", availability="active")
        await cluster.call(
            "service.create", name="onlyworkers", image=IMAGE_1, replicas=6, constraints=["node.role==worker"]
        )
        await cluster.wait_until(
            lambda: _equals(running_by_node(cluster, "onlyworkers"), Counter({"w1": 3, "w2": 3})),
            "only on workers",
        )


async def test_placement_preference_spreads_over_zones(tmp_path: Path) -> None:
    """Spread over the values of a node label first, then over the nodes of each value: zones of
    3, 2 and 1 nodes get 3 tasks each (plain spread would give zone a 4 or 5). The logic of
    test_service_lifecycle.py::test_placement_preference_spreads_over_zones, at six nodes."""
    zones = {"m1": "a", "w1": "a", "w2": "a", "w3": "b", "w4": "b", "w5": "c"}
    async with InProcessCluster(tmp_path, managers=1, workers=5) as cluster:
        for name, zone in zones.items():
            await cluster.call("node.update", node=name, label_add=[f"zone={zone}"])
        await cluster.call(
            "service.create",
            name="zoned",
            image=IMAGE_1,
            replicas=9,
            placement_prefs=["spread=node.labels.zone"],
        )
        await cluster.wait_for_running("zoned", 9)
        per_node = await running_by_node(cluster, "zoned")
        per_zone: Counter[str] = Counter()
        for name, count in per_node.items():
            per_zone[zones[name]] += count
        assert per_zone == Counter({"a": 3, "b": 3, "c": 3}), per_node


async def test_restart_on_failure_stops_after_max_attempts(tmp_path: Path) -> None:
    """A task that exits 3 is replaced twice, then no more (test_restart_on_failure_max_attempts)."""
    async with InProcessCluster(tmp_path) as cluster:
        await cluster.call(
            "service.create",
            name="flaky",
            image=IMAGE_1,
            args=["sh", "-c", "exit 3"],
            restart_condition="on-failure",
            restart_max_attempts=2,
            restart_delay="0s",
        )

        async def three_failed_and_all_stopped() -> list[dict[str, Any]] | None:
            tasks = await cluster.tasks("flaky")
            failed = [t for t in tasks if t["State"] == "Failed"]
            done = len(failed) == 3 and all(t["DesiredState"] == "Shutdown" for t in tasks)
            return tasks if done else None

        await cluster.wait_until(three_failed_and_all_stopped, "the first run and 2 restarts to fail")
        # The orchestrator has seen every failure; a fourth attempt would be a new task now.
        for _ in range(10):
            tasks = await cluster.tasks("flaky")
            assert len(tasks) == 3, tasks
            assert {t["Error"] for t in tasks} and all("3" in t["Error"] for t in tasks), tasks
        rows = task_rows(await cluster.call("service.ps", services=["flaky"]), no_trunc=False)
        assert [r["Name"] for r in rows] == ["flaky.1", " \\_ flaky.1", " \\_ flaky.1"], (
            "history rows under the slot"
        )


async def test_failing_update_rolls_back(tmp_path: Path) -> None:
    """An update whose tasks fail is rolled back to the old spec (test_failing_update_rolls_back)."""
    async with InProcessCluster(tmp_path, workers=1) as cluster:
        await cluster.call(
            "service.create", name="rb", image=IMAGE_1, replicas=3, stop_grace_period="0s", restart_delay="0s"
        )
        await cluster.wait_for_running("rb", 3)
        await cluster.call(
            "service.update",
            service="rb",
            image=IMAGE_2,
            args=["sh", "-c", "exit 1"],
            update_failure_action="rollback",
            update_monitor="0.3s",
            rollback_monitor="0.1s",
        )
        await cluster.wait_until(
            lambda: _is(update_state(cluster, "rb"), lambda s: s[0] == "ROLLBACK_COMPLETED"),
            "rollback completed",
        )
        await cluster.wait_until(
            lambda: _equals(images_running(cluster, "rb"), Counter({IMAGE_1: 3})), "all on the old image"
        )
        service = (await cluster.call("service.inspect", services=["rb"]))[0]
        assert "previous_spec" not in service, "an automatic rollback clears the previous spec"


@pytest.mark.parametrize(("order", "floor"), [("stop-first", 4), ("start-first", 6)])
async def test_rolling_update_keeps_capacity(tmp_path: Path, order: str, floor: int) -> None:
    """Parallelism 2 of 6: never fewer than 4 running (stop-first) or 6 (start-first), counted
    in the fake engines themselves at every turn of the loop (test_rolling_update_keeps_capacity)."""
    async with InProcessCluster(tmp_path, workers=1) as cluster:
        await cluster.call("service.create", name="roll", image=IMAGE_1, replicas=6, stop_grace_period="0s")
        await cluster.wait_for_running("roll", 6)
        lowest = 6

        async def count_engine_containers() -> None:
            nonlocal lowest
            while True:
                running = sum(
                    1
                    for node in cluster.nodes
                    for container in cluster.runtime(node).engine.containers.values()
                    if container.running
                )
                lowest = min(lowest, running)
                await asyncio.sleep(0)

        counter = asyncio.ensure_future(count_engine_containers())
        try:
            await cluster.call(
                "service.update",
                service="roll",
                image=IMAGE_2,
                update_parallelism=2,
                update_delay="0s",
                update_order=order,
                update_monitor="0.1s",
            )

            async def converged() -> bool:
                state, _ = await update_state(cluster, "roll")
                return state == "COMPLETED" and await images_running(cluster, "roll") == Counter({IMAGE_2: 6})

            await cluster.wait_until(converged, "the update to complete on 6 tasks")
        finally:
            counter.cancel()
        assert lowest >= floor, f"{order}: only {lowest} containers were running at one point"


async def test_restarted_worker_readopts_its_containers(tmp_path: Path) -> None:
    """A worker's daemon restarts: its tasks keep their containers (test_daemon_restart_readopts_containers)."""
    async with InProcessCluster(tmp_path, workers=1) as cluster:
        await cluster.call(
            "service.create", name="keep", image=IMAGE_1, replicas=4, constraints=["node.role==worker"]
        )
        await cluster.wait_for_running("keep", 4)
        worker = cluster.node("w1")
        before = {c.id for c in cluster.runtime(worker).engine.containers.values() if c.running}
        assert len(before) == 4
        worker = await cluster.restart(worker)
        await cluster.wait_until(
            lambda: worker.daemon.agent is not None and worker.daemon.agent.connected.is_set(), "agent back"
        )
        await cluster.wait_for_running("keep", 4)
        after = {c.id for c in cluster.runtime(worker).engine.containers.values() if c.running}
        assert after == before, "the restarted agent started new containers instead of re-adopting"
        assert len(await cluster.tasks("keep")) == 4, "tasks were replaced"


async def test_nodes_beyond_the_ingress_subnet_still_join_and_run_tasks(tmp_path: Path) -> None:
    """Every node gets an address on the ingress network when its session opens; once that
    subnet is full (a /24 holds 253 nodes: found with 1,000 hollow nodes), the next nodes must
    still come up and run tasks (they cannot forward ingress connections), not fail their
    session forever. A /29 ingress makes the point with 8 workers."""
    async with InProcessCluster(
        tmp_path, workers=8, init_options={"default_addr_pool_mask_length": "29"}
    ) as cluster:
        await cluster.call("service.create", name="all", image=IMAGE_1, mode="global")
        await cluster.wait_until(
            lambda: _is(running_by_node(cluster, "all"), lambda c: len(c) == 9),
            "a task on each of the 9 nodes",
        )


async def test_the_manager_list_is_not_rebuilt_for_every_session_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every session message carries the managers' addresses and node IDs; building those lists
    scans every node, so they are rebuilt only after the store changed (quadratic with 1,000
    hollow nodes)."""
    async with InProcessCluster(tmp_path, workers=2) as cluster:
        leader = cluster.leader()
        assert leader is not None and leader.daemon.manager is not None
        manager = leader.daemon.manager
        nodes = manager.store.view.nodes
        scans = 0
        every = type(nodes).all

        def counted(table: Any) -> Any:
            nonlocal scans
            if table is nodes:
                scans += 1
            return every(table)

        monkeypatch.setattr(type(nodes), "all", counted)
        first = manager.manager_addrs()
        assert first == [leader.addr]
        for _ in range(100):
            assert manager.manager_addrs() == first
        assert scans <= 1, f"the node table was scanned {scans} times for 101 identical lists"
        dispatcher = manager.dispatcher
        assert dispatcher is not None
        scans = 0
        ids = dispatcher.manager_ids()
        assert ids == (leader.node_id,)
        for _ in range(100):
            assert dispatcher.manager_ids() == ids
        assert scans <= 1, f"the node table was scanned {scans} times for 101 identical manager ID lists"
        scans = 1
        await cluster.call("node.update", node="w1", label_add=["k=v"])
        await cluster.wait_until(
            lambda: manager.manager_addrs() == first and scans >= 2, "a rescan after a write"
        )


async def test_a_waiting_replacement_hears_only_of_its_old_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replacement waits for its old task to stop; hundreds wait at once when nodes are lost
    at scale, so each must not be woken by every other task's events (quadratic: a third of
    the leader's CPU with 1,000 hollow nodes)."""
    async with InProcessCluster(tmp_path) as cluster:
        await cluster.call("service.create", name="old", image=IMAGE_1, replicas=1)
        (old,) = await cluster.wait_for_running("old", 1)
        leader = cluster.leader()
        assert leader is not None and leader.daemon.manager is not None
        orchestrator = next(
            c for c in leader.daemon.manager._components if isinstance(c, ReplicatedOrchestrator)
        )
        wakeups = 0
        get = Watch.get
        waiters: list[asyncio.Future[None]] = []

        async def counted(watch: Watch) -> Any:
            nonlocal wakeups
            event = await get(watch)
            wakeups += asyncio.current_task() in waiters
            return event

        monkeypatch.setattr(Watch, "get", counted)
        store = leader.daemon.manager.store
        watches = len(store._watches)
        waiters += [asyncio.ensure_future(orchestrator.restarts._wait_old_task(old["ID"])) for _ in range(20)]
        try:
            await asyncio.sleep(0)  # every waiter started
            # Nor is every task event checked against each waiter (a store watch each).
            assert len(store._watches) == watches, "each waiting replacement added a store watch"
            await cluster.call("service.create", name="busy", image=IMAGE_1, replicas=10)
            await cluster.wait_for_running("busy", 10)
            assert not any(w.done() for w in waiters)
            assert wakeups == 0, f"20 waiters were woken {wakeups} times by other tasks' events"
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


async def test_bad_service_spec_is_one_line_and_stores_nothing(tmp_path: Path) -> None:
    async with InProcessCluster(tmp_path) as cluster:
        with pytest.raises(APIError) as caught:
            await cluster.call("service.create", name="bad", image=IMAGE_1, replicas="many")
        assert caught.value.code == StatusCode.INVALID_ARGUMENT
        assert "--replicas" in caught.value.message and "\n" not in caught.value.message
        assert await cluster.call("service.ls") in ([], {"services": []})


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _is(value: Any, check: Any) -> bool:
    return bool(check(await value))
