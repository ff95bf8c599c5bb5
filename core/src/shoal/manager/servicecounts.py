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
        yield from visit_in_steps(view.tasks.all(), lambda task: fresh._count(task, 1))
        return lambda: vars(self).update(vars(fresh))

    def applied(self, events: list[Event]) -> None:
        for event in events:
            if event.kind == "task":
                old: pb.Task | None = event.old
                if event.action == DELETE:
                    self._count(event.obj, -1)
                    continue
                if old is not None:
                    if _counted_alike(old, event.obj):
                        continue  # most changes: a state on the way to RUNNING
                    self._count(old, -1)
                self._count(event.obj, 1)

    def _count(self, task: pb.Task, sign: int) -> None:
        """Count ``task`` in (sign 1) or out (-1): desired running, and running or unplaced too;
        or stopping."""
        if task.desired_state != states.RUNNING:
            if _stopping(task):
                add_count(self._stopping, task.service_id, sign)
            return
        service_id = task.service_id
        add_count(self._desired, service_id, sign)
        state = task.status.state
        if state == states.RUNNING:
            add_count(self._running, service_id, sign)
        elif state < states.ASSIGNED:
            add_count(self._unplaced, service_id, sign)


def _counted_alike(old: pb.Task, new: pb.Task) -> bool:
    """Whether ``new`` counts where ``old`` did, in every count."""
    old_state, new_state = old.status.state, new.status.state
    return (
        old.service_id == new.service_id
        and (old.desired_state == states.RUNNING) == (new.desired_state == states.RUNNING)
        and (old_state == states.RUNNING) == (new_state == states.RUNNING)
        and (old_state < states.ASSIGNED) == (new_state < states.ASSIGNED)
        and _stopping(old) == _stopping(new)
    )


def _stopping(task: pb.Task) -> bool:
    """Whether ``task`` is marked for removal and its node has yet to report it stopped."""
    return task.desired_state == states.REMOVE and states.ASSIGNED <= task.status.state <= states.RUNNING
