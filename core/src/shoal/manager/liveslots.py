"""Each service's live slots and the spec versions of its live tasks, kept as the store applies.

The orchestrator reconciles a service whole on every change of it (a scale, an update) and a
new leader reconciles every service: each time it counted the slots holding a task wanted
running, and the rolling-update check looked for tasks of an older spec or two live tasks in
one slot, each a pass over every task of the service (at 100,000 replicas a few hundred ms of
the leader's loop apiece). ``LiveSlots`` keeps both per service as the store applies
(``ObjectStore.listen``), so the answer is there without a pass; only the changes of the
transactions not committed yet are looked at (``runnable_slots``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from shoal import states
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import DELETE, Event, ObjectStore
from shoal.store.pieces import TaskIndexInPieces, add_count

#: A slot as the rolling update keys it: the slot number, or the node of a global task.
Slot = int | str


def live_slot(task: pb.Task) -> Slot:
    return task.slot or task.node_id


def _live(task: pb.Task) -> bool:
    return task.desired_state <= states.RUNNING


def _alike(old: pb.Task, new: pb.Task) -> bool:
    """Whether ``new`` counts exactly where ``old`` did (most changes: a state on the way up)."""
    if _live(old) != _live(new):
        return False
    return not _live(new) or (
        old.service_id == new.service_id
        and old.slot == new.slot
        and old.node_id == new.node_id
        and old.spec_version == new.spec_version
    )


class LiveSlots(TaskIndexInPieces):
    """Per service: live tasks per slot, and live tasks per spec version."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store)
        self._slots: dict[str, Counter[Slot]] = {}
        self._versions: dict[str, Counter[int]] = {}

    def _reset(self) -> None:
        self._slots, self._versions = {}, {}

    # ------------------------------------------------------------------ reads

    def slots(self, service_id: str) -> Counter[Slot]:
        """Live tasks per slot of the committed view (read-only)."""
        return self._slots.get(service_id) or Counter()

    def all_current(self, service_id: str, spec_version: int) -> bool:
        """Every live task is of ``spec_version`` and alone in its slot."""
        versions = self._versions.get(service_id)
        if not versions:
            return True
        slots = self._slots[service_id]
        return set(versions) == {spec_version} and sum(versions.values()) == len(slots)

    def runnable_slots(
        self, service_id: str, changed: Iterable[tuple[pb.Task | None, pb.Task | None]]
    ) -> set[Slot]:
        """The service's live slots once ``changed`` (committed version, new version or None
        for deleted) is applied over the committed view."""
        slots = Counter(self.slots(service_id))
        for old, new in changed:
            if old is not None and old.service_id == service_id and _live(old):
                add_count(slots, live_slot(old), -1)
            if new is not None and new.service_id == service_id and _live(new):
                add_count(slots, live_slot(new), 1)
        return set(slots)

    # ------------------------------------------------------------------ ApplyListener

    def applied(self, events: list[Event]) -> None:
        for event in self._task_events(events):
            task: pb.Task = event.obj
            old: pb.Task | None = event.old
            if event.action == DELETE:
                self._leave(task)
            elif old is None:
                self._enter(task)
            elif not _alike(old, task):
                self._leave(old)
                self._enter(task)

    def _enter(self, task: pb.Task) -> None:
        if _live(task):
            service = task.service_id
            slots = self._slots.get(service)
            if slots is None:
                slots = self._slots[service] = Counter()
                self._versions[service] = Counter()
            add_count(slots, live_slot(task), 1)
            add_count(self._versions[service], task.spec_version, 1)

    def _leave(self, task: pb.Task) -> None:
        if _live(task):
            service = task.service_id
            add_count(self._slots[service], live_slot(task), -1)
            versions = self._versions[service]
            add_count(versions, task.spec_version, -1)
            if not versions:
                del self._slots[service], self._versions[service]
