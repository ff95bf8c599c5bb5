"""A write's answer leaves before any store watch looks at the change it made.

Every committed change is offered to every watch of its kind (orchestrators, the scheduler,
the dispatcher's sessions, the network state, the event ring), each running its predicate.
That work is the watchers', not the writer's: on a leader answering one write at a time it
sat on the write's path, just before the answer. In-process cluster (real daemon, raft store,
memory transport); the order is the event loop's, so the test is deterministic.
"""

from __future__ import annotations

from pathlib import Path

from shoal.store.memory import Event
from shoal.testing.cluster import InProcessCluster

WRITES = 5


async def test_the_answer_leaves_before_the_watches_see_the_change(tmp_path: Path) -> None:
    async with InProcessCluster(tmp_path, managers=1) as cluster:
        node = cluster.node("m1")
        assert node.daemon.manager is not None
        store = node.daemon.manager.store
        order: list[str] = []

        def looks(event: Event) -> bool:
            probe = event.obj.spec.annotations.labels.get("probe", "")
            before = event.old.spec.annotations.labels.get("probe", "") if event.old is not None else ""
            if probe != before:  # the write that set it, not a later write of the same node
                order.append(f"watch saw {probe}")
            return False

        with store.watch(["node"], where=looks):
            for i in range(WRITES):
                await node.call("node.update", node="self", label_add=[f"probe=w{i}"])
                order.append(f"answer w{i}")
                await cluster.wait_until(lambda i=i: f"watch saw w{i}" in order, f"the watch to see w{i}")
        assert order == [line for i in range(WRITES) for line in (f"answer w{i}", f"watch saw w{i}")]
