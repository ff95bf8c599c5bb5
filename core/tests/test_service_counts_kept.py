"""The counts ``ServiceTaskCounts`` keeps as the store applies are those a recount gives.

Each change moves a task between the counts it is in (desired running and running, not
placed yet, placed, marked for removal and not stopped yet, none): random changes of state,
desired state, service and node, creates and deletes, applied in batches as transactions
are, and after each batch every count of every service is compared with a fresh count of
the view.
"""

from __future__ import annotations

import random

from shoal import states
from shoal.manager.servicecounts import ServiceTaskCounts
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store

SERVICES = ("s1", "s2", "s3")
STATES = (
    states.NEW,
    states.PENDING,
    states.ASSIGNED,
    states.ACCEPTED,
    states.PREPARING,
    states.STARTING,
    states.RUNNING,
    states.COMPLETE,
    states.SHUTDOWN,
    states.FAILED,
    states.REJECTED,
    states.REMOVE,
)
DESIRED = (states.RUNNING, states.READY, states.SHUTDOWN, states.REMOVE)


def _counts(counts: ServiceTaskCounts) -> dict[str, tuple[int, int, int, int]]:
    return {
        s: (counts.running(s), counts.desired(s), counts.unplaced(s), counts.stopping(s)) for s in SERVICES
    }


def _recount(store: ObjectStore) -> dict[str, tuple[int, int, int, int]]:
    fresh = ServiceTaskCounts(store)
    fresh.restored()
    return _counts(fresh)


def _change(rng: random.Random, tx: Tx, task_ids: list[str], serial: list[int]) -> None:
    roll = rng.random()
    if roll < 0.15 or not task_ids:
        serial[0] += 1
        task = pb.Task(id=f"t{serial[0]}", service_id=rng.choice(SERVICES))
        task.desired_state = rng.choice(DESIRED)  # type: ignore[assignment]
        task.status.state = rng.choice(STATES)  # type: ignore[assignment]
        tx.create(task)
        task_ids.append(task.id)
        return
    task_id = rng.choice(task_ids)
    current = tx.task(task_id)
    if current is None:
        return
    if roll < 0.22:
        tx.delete("task", task_id)
        task_ids.remove(task_id)
        return
    task = copy(current)
    if roll < 0.6:
        task.status.state = rng.choice(STATES)  # type: ignore[assignment]
    elif roll < 0.85:
        task.desired_state = rng.choice(DESIRED)  # type: ignore[assignment]
    elif roll < 0.93:
        task.service_id = rng.choice(SERVICES)
    else:
        task.node_id = rng.choice(("", "n1", "n2"))
    tx.update(task)


async def test_the_kept_counts_are_a_recount_of_the_view() -> None:
    store = await instant_store()
    counts = store.derived(ServiceTaskCounts)
    rng = random.Random(18)
    task_ids: list[str] = []
    serial = [0]
    for _ in range(300):

        def batch(tx: Tx) -> None:
            for _ in range(rng.randint(1, 12)):
                _change(rng, tx, task_ids, serial)

        await store.update(batch)
        assert _counts(counts) == _recount(store)
    # The walk reached every count, both ways.
    assert all(any(c[i] for c in _recount(store).values()) for i in range(4))
