"""What the task reaper's slot index costs the leader per task (issue 18: "say what it is per
node and per task"). A dict keyed by (service, slot, node) tuples with a set of IDs per slot
was ~510 bytes per task, as much as the rest of the leader's Python objects per task."""

from __future__ import annotations

import gc
import tracemalloc

from shoal import states
from shoal.manager.reaper import TaskReaper
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore

TASKS = 20_000
#: Bytes per task the index may take: the slot's entry in its service's dict, the slot
#: number and the task's ID (~150 measured).
BUDGET = 250


def test_the_slot_index_costs_under_250_bytes_per_task() -> None:
    store = ObjectStore()
    for number in range(TASKS):
        task = pb.Task(id=f"task{number:021d}", service_id=f"svc{number % 4:022d}", slot=number + 1)
        task.node_id = f"node{number % 100:021d}"
        task.desired_state = task.status.state = states.RUNNING
        store.view.put("task", task)
    reaper = TaskReaper(store)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reaper.restored()
        gc.collect()
        per_task = (tracemalloc.get_traced_memory()[0] - before) / TASKS
    finally:
        tracemalloc.stop()
    assert len(reaper.index()) == TASKS
    assert per_task < BUDGET, f"the reaper's index holds {per_task:.0f} bytes per task"


def test_a_task_id_is_one_str_in_the_view_its_indexes_and_the_reaper() -> None:
    # A message's ``id`` is a new str at every read: the table, the two task indexes and the
    # reaper each held a copy of every task's ID (~75 bytes each).
    store = ObjectStore()
    task = pb.Task(id="t" * 25, service_id="s" * 25, slot=1, node_id="n" * 25)
    task.desired_state = states.RUNNING
    store.view.put("task", task)
    reaper = TaskReaper(store)
    reaper.restored()
    (key,) = store.view.tasks.items
    (by_service,) = store.view.tasks_by_service["s" * 25]
    (by_node,) = store.view.tasks_by_node["n" * 25]
    (held,) = reaper._slots["s" * 25].values()
    assert by_service is key and by_node is key and held is key
