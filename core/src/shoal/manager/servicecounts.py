"""Each service's running and desired-running task counts, kept as the store applies.

``service ls`` showed REPLICAS by counting every task of every service on each call: at
10,000 replicas that was a pass over 10,000 tasks per listing, and a monitor (or
``bench_hollow``) asking twice a second spent a few per cent of the leader's loop on it while
the service started. The counts are kept per change instead (``ObjectStore.derived``: built
on the first listing, then updated by every apply), so a listing costs O(services).
"""

from __future__ import annotations

from collections import Counter

from shoal import states
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import DELETE, Event, ObjectStore, ReadView, Restoring, finish, visit_in_steps
from shoal.store.pieces import add_count


class ServiceTaskCounts:
    """Per service ID: tasks running (and desired running), tasks desired running, tasks
    desired running that no node has yet (before ASSIGNED), and tasks marked for removal that
    a node still has to stop (ASSIGNED up to RUNNING)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._running: Counter[str] = Counter()
        self._desired: Counter[str] = Counter()
        self._unplaced: Counter[str] = Counter()
        self._stopping: Counter[str] = Counter()

    def running(self, service_id: str) -> int:
        return self._running[service_id]

    def desired(self, service_id: str) -> int:
        return self._desired[service_id]

    def unplaced(self, service_id: str) -> int:
        """Tasks desired running not given to a node yet: how many the service's nodes are
        still to be sent (the dispatcher's gathering of assignments asks)."""
        return self._unplaced[service_id]

    def stopping(self, service_id: str) -> int:
        """Tasks marked for removal (``service rm``, a scale down) that their node has not
        reported stopped yet: how many reports of a removal are still to come (the
        dispatcher's hold of those reports asks)."""
        return self._stopping[service_id]

    # ------------------------------------------------------------------ ApplyListener

    def restored(self) -> None:
        finish(self.restoring(self.store.view))()

    def restoring(self, view: ReadView) -> Restoring:
        """Count ``view``'s tasks a step at a time (``ObjectStore.restore_steps``), aside."""
        fresh = ServiceTaskCounts(self.store)
        yield from visit_in_steps(
            view.tasks.all(), lambda task: fresh._count(task.service_id, _bucket(task), 1)
        )
        return lambda: vars(self).update(vars(fresh))

    def applied(self, events: list[Event]) -> None:
        for event in events:
            if event.kind != "task":
                continue
            task: pb.Task = event.obj
            if event.action == DELETE:
                self._count(task.service_id, _bucket(task), -1)
                continue
            new = _bucket(task)
            old: pb.Task | None = event.old
            if old is None:
                self._count(task.service_id, new, 1)
            elif old.service_id != task.service_id:
                self._count(old.service_id, _bucket(old), -1)
                self._count(task.service_id, new, 1)
            else:
                self._move(task.service_id, _bucket(old), new)

    def _count(self, service_id: str, bucket: int, sign: int) -> None:
        """Count a task of ``bucket`` (``_bucket``) in (sign 1) or out (-1)."""
        if bucket == _STOPPING:
            add_count(self._stopping, service_id, sign)
        elif bucket != _OTHER:
            add_count(self._desired, service_id, sign)
            if bucket == _RUNNING:
                add_count(self._running, service_id, sign)
            elif bucket == _UNPLACED:
                add_count(self._unplaced, service_id, sign)

    def _move(self, service_id: str, old: int, new: int) -> None:
        """A task of the service went from bucket ``old`` to ``new``: only the counts that
        differ are touched. Most changes stay in their bucket (a state on the way to RUNNING)
        or stay desired running (placed, then running): one count each, not the five
        additions of counting the old version out and the new one in (13 us per task in a
        create, 20,000 tasks in pieces of 500)."""
        if old == new:
            return
        if old in _DESIRED_RUNNING and new in _DESIRED_RUNNING:
            if old == _RUNNING:
                add_count(self._running, service_id, -1)
            elif old == _UNPLACED:
                add_count(self._unplaced, service_id, -1)
            if new == _RUNNING:
                add_count(self._running, service_id, 1)
            elif new == _UNPLACED:
                add_count(self._unplaced, service_id, 1)
            return
        self._count(service_id, old, -1)
        self._count(service_id, new, 1)


#: Where a task counts (``_bucket``): desired running and running, desired running and not
#: given to a node yet, desired running otherwise (on a node, not running yet or no more),
#: marked for removal and not stopped by its node yet, or in no count.
_RUNNING, _UNPLACED, _PLACED, _STOPPING, _OTHER = range(5)
_DESIRED_RUNNING = frozenset({_RUNNING, _UNPLACED, _PLACED})


def _bucket(task: pb.Task) -> int:
    """Which counts ``task`` is in (one bucket per combination the counts tell apart)."""
    state = task.status.state
    desired = task.desired_state
    if desired == states.RUNNING:
        if state == states.RUNNING:
            return _RUNNING
        return _UNPLACED if state < states.ASSIGNED else _PLACED
    if desired == states.REMOVE and states.ASSIGNED <= state <= states.RUNNING:
        return _STOPPING
    return _OTHER
