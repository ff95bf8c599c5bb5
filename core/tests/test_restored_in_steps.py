"""A snapshot's install rebuilds the apply listeners' indexes a piece at a time (issue 18).

``ObjectStore.restore_steps`` puts a snapshot's objects into a new view a step at a time, but
its last step told every listener at once, and each walked every task of the new view in it
(at 100,000 tasks: the service counts ~270 ms, the reaper's slots ~350 ms, the live slots and
node loads as much again), a stall of a follower's loop in the middle of an install. Each walk
now takes steps of its own, builds aside, and is put in place with the view: readers see the
old view and the old indexes until then, and the new ones after, as a one-pass rebuild gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from shoal import states
from shoal.manager.liveslots import LiveSlots
from shoal.manager.netendpoints import TaskEndpoints
from shoal.manager.netobjects import UsedAddresses
from shoal.manager.nodeload import NodeLoads
from shoal.manager.reaper import TaskReaper
from shoal.manager.servicecounts import ServiceTaskCounts
from shoal.proto import objects_pb2 as pb
from shoal.store import memory
from shoal.store.memory import RESTORED_PER_STEP, ObjectStore

TASKS = 3_000


def _loaded(tasks: int, state: pb.TaskState.ValueType) -> ObjectStore:
    store = ObjectStore()
    view = store.view
    view.put("service", pb.Service(id="svc1"))
    for number in range(tasks):
        task = pb.Task(id=f"t{number:06d}", service_id="svc1", slot=number + 1, node_id=f"n{number % 7}")
        task.desired_state = states.RUNNING
        task.status.state = state
        if number % 3 == 0:
            attachment = task.networks.add()
            attachment.network.id = "net1"
            attachment.addresses.append(f"10.0.{number // 250}.{number % 250 + 2}/16")
        view.put("task", task)
    store.applied_index = 10
    return store


def _state(listener: Any) -> Any:
    """What a listener's index holds (compared with a one-pass rebuild's)."""
    if isinstance(listener, TaskReaper):
        return listener.index()
    fields = {
        ServiceTaskCounts: ("_running", "_desired", "_unplaced", "_stopping"),
        TaskEndpoints: ("_serving", "_node_networks"),
        UsedAddresses: ("_held", "_floor"),
        LiveSlots: ("_slots", "_versions"),
        NodeLoads: ("_unassigned",),
    }[type(listener)]
    return {name: getattr(listener, name) for name in fields}


#: Each listener, and the method its walk calls once per object visited.
LISTENERS: list[tuple[Callable[[ObjectStore], Any], str]] = [
    (ServiceTaskCounts, "_count"),
    (TaskEndpoints, "_count"),
    (UsedAddresses, "_count"),
    (LiveSlots, "_enter"),
    (NodeLoads, "_enter"),
    (TaskReaper, "_mark"),
]


def test_an_install_walks_no_more_than_a_piece_per_step_and_ends_as_a_one_pass_rebuild(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leader = _loaded(TASKS, states.RUNNING)
    data = leader.snapshot()
    follower = _loaded(TASKS // 2, states.PENDING)
    listeners = []
    for make, _ in LISTENERS:
        listener = make(follower)
        listener.restored()
        follower.listen(listener)
        listeners.append(listener)
    before = [repr(_state(listener)) for listener in listeners]
    visited = [0]
    for make, method in LISTENERS:
        original = getattr(make, method)

        def counted(self: Any, *args: Any, original: Callable[..., None] = original) -> None:
            visited[0] += 1
            original(self, *args)

        monkeypatch.setattr(make, method, counted)
    per_step = []
    for _ in follower.restore_steps(leader.applied_index, data):
        per_step.append(visited[0])
        visited[0] = 0
        # Between two steps: the old view and the old indexes, together.
        assert len(follower.view.tasks.items) == TASKS // 2
        assert [repr(_state(listener)) for listener in listeners] == before
    per_step.append(visited[0])
    assert sum(per_step) >= len(LISTENERS) * TASKS
    # A walk's last piece and the next walk's first may share a step.
    assert max(per_step) <= 2 * RESTORED_PER_STEP, f"a step walked {max(per_step)} objects"
    monkeypatch.undo()
    assert len(follower.view.tasks.items) == TASKS
    for (make, _), listener in zip(LISTENERS, listeners, strict=True):
        fresh = make(follower)
        fresh.restored()
        assert _state(listener) == _state(fresh), f"{make.__name__} differs from a one-pass rebuild"
    assert listeners[0].running("svc1") == TASKS


def test_a_listener_that_starts_listening_during_the_steps_is_rebuilt_at_the_end() -> None:
    leader = _loaded(TASKS, states.RUNNING)
    data = leader.snapshot()
    follower = _loaded(10, states.PENDING)
    steps = follower.restore_steps(leader.applied_index, data)
    next(steps)
    counts = follower.derived(ServiceTaskCounts)  # counted from the old view
    assert counts.running("svc1") == 0
    memory.finish(steps)
    assert counts.running("svc1") == TASKS


def test_a_restore_dropped_before_its_end_leaves_the_indexes_as_they_were() -> None:
    leader = _loaded(TASKS, states.RUNNING)
    data = leader.snapshot()
    follower = _loaded(10, states.RUNNING)
    counts = follower.derived(ServiceTaskCounts)
    steps = follower.restore_steps(leader.applied_index, data)
    for _ in range(TASKS // 1000 + 3):  # into the walks
        next(steps)
    steps.close()
    assert counts.running("svc1") == 10 and len(follower.view.tasks.items) == 10
