"""The task reaper: deletes tasks nobody needs any more.

It keeps the cluster's task history limit (default 5) per slot — the live task plus the most
recent dead ones, which ``service ps`` shows as ``\\_`` rows — and deletes tasks of removed
slots once their container is gone. Deleting a task is what tells its agent to remove the
container.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from sys import intern

from shoal import defaults, states
from shoal.proto import objects_pb2 as pb
from shoal.roles.store import StoreUnavailable
from shoal.store.memory import (
    DELETE,
    Event,
    ObjectStore,
    ReadView,
    Restoring,
    Tx,
    finish,
    visit_in_pieces,
    visit_in_steps,
)
from shoal.store.pieces import not_indexed_yet

log = logging.getLogger("shoal.reaper")

TICK = 0.25
#: Tasks deleted per store transaction; the slots left go to the next round. Reaping a removed
#: service of 10,000 tasks was one entry of 10,000 deletions, applied by every manager at once.
MAX_DELETES_PER_COMMIT = 500
#: Tasks indexed per loop step when a new leader's reaper starts over a loaded store.
INDEXED_PER_STEP = 5_000


def removable(task: pb.Task) -> bool:
    """A task marked REMOVE whose container is gone or never existed."""
    if task.desired_state < states.REMOVE:
        return False
    return not task.node_id or task.status.state >= states.COMPLETE or task.status.state < states.ASSIGNED


#: A slot: (service ID, slot number, node ID for a global service's task, else "").
SlotKey = tuple[str, int, str]
#: A slot within its service: its number, or a global service's node ID (slot 0).
InService = int | str
#: The IDs of a slot's tasks: one ID alone (most slots: the live task) or a set of two or more.
SlotIds = str | set[str]


def _in_service(key: SlotKey) -> InService:
    return key[1] or key[2]


def _ids(held: SlotIds | None) -> tuple[str, ...] | set[str]:
    if held is None:
        return ()
    return (held,) if isinstance(held, str) else held


def _may_free(task: pb.Task | None) -> bool:
    """Whether ``task`` counts in its slot's history or may be deleted: a change of a task
    that was and stays live (its state moving up to RUNNING) changes neither, so it does not
    make the reaper look at the slot (five such changes per task while a service starts)."""
    return task is not None and (task.desired_state > states.RUNNING or states.is_terminal(task.status.state))


def _may_move(old: pb.Task, new: pb.Task) -> bool:
    """Whether ``new`` may be in another slot than ``old``: not when none of the three fields
    a slot is made of changed (a state change, four of a started task's five changes, built
    two slot keys to compare on every manager)."""
    return old.service_id != new.service_id or old.slot != new.slot or old.node_id != new.node_id


class TaskReaper:
    """Runs on the leader; prunes in batches every 250 ms while there is work.

    It keeps the IDs of each slot's tasks as the store applies them (``ObjectStore.listen``),
    so a prune looks only at the slots that changed: scanning every task of each service that
    changed, every 250 ms, was most of the leader's loop while 100,000 replicas started. The
    index is never behind the view (a watch would tell it loop turns after the apply): a slot's
    IDs are exactly the view's tasks of that slot.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._dirty: set[SlotKey] = set()
        #: Slots to look at, oldest first: a round takes them from here until its transaction
        #: holds MAX_DELETES_PER_COMMIT deletions, and the next round goes on at once. (A
        #: round cut short put every slot left back into ``_dirty`` and waited TICK: ``service
        #: rm`` of 110,000 replicas was 220 rounds of 0.25 s, each copying every slot left.)
        self._backlog: deque[SlotKey] = deque()
        #: While indexing in pieces at start: the view's tasks not indexed yet.
        self._uncounted: set[str] = set()
        #: Service ID -> slot -> the IDs of its tasks. One dict per service and a lone ID as
        #: a str: a dict keyed by (service, slot, node) tuples holding a set per slot was
        #: ~510 bytes per task (the tuple, a copy of the service ID, an empty-slack set), as
        #: much as the rest of the leader's Python objects per task; this is ~150.
        self._slots: dict[str, dict[InService, SlotIds]] = {}
        #: One copy of each service ID for the keys above (a task's ``service_id`` is a new
        #: str at every read).
        self._service_ids: dict[str, str] = {}
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="task-reaper")

    async def _index_in_pieces(self) -> None:
        """``restored`` and follow the applies, indexing the view's tasks INDEXED_PER_STEP
        per loop step: a new leader over 100,000 tasks indexed them in one step (close to
        half a second of its loop). A task not indexed yet is skipped by the applies; the
        view's version of it is indexed when its turn comes."""
        if self._stop_listening is not None:
            return
        self._clear()
        self._uncounted = set(self.store.view.tasks.items)
        self._stop_listening = self.store.listen(self)
        await visit_in_pieces(self._uncounted, self.store.view.tasks, self._mark, INDEXED_PER_STEP)

    async def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _history_limit(self) -> int:
        cluster = self.store.view.cluster()
        if cluster is None:
            return defaults.TASK_HISTORY_LIMIT
        return int(cluster.spec.orchestration.task_history_retention_limit)

    async def _run(self) -> None:
        await self._index_in_pieces()
        while True:
            if not self._backlog:
                await self._work.wait()
                await asyncio.sleep(TICK)  # gather a round's changes
            else:
                await asyncio.sleep(0)  # a round cut short goes on at once, after the loop's other work
            self._work.clear()
            self._backlog.extend(self._dirty)
            self._dirty = set()
            taken: list[SlotKey] = []
            try:
                await self.store.update(functools.partial(self._reap, backlog=self._backlog, taken=taken))
            except StoreUnavailable as exc:
                log.warning("task reaper could not commit: %s", exc)
                self._backlog.extendleft(reversed(taken))  # looked at again in the next round
                await asyncio.sleep(TICK)

    # ------------------------------------------------------------------ ApplyListener

    def restored(self) -> None:
        """Index every task of the view, and look once at every slot that may hold something
        to prune (none other: a slot of the view replaced has no task left to prune)."""
        finish(self.restoring(self.store.view))()

    def restoring(self, view: ReadView) -> Restoring:
        """``restored`` a step at a time (``ObjectStore.restore_steps``): indexed aside, put in
        place when the view is."""
        fresh = TaskReaper(self.store)
        yield from visit_in_steps(view.tasks.all(), fresh._mark)

        def install() -> None:
            self._backlog.clear()
            self._slots, self._service_ids, self._dirty = fresh._slots, fresh._service_ids, fresh._dirty
            self._uncounted = set()
            if self._dirty:
                self._work.set()

        return install

    def applied(self, events: list[Event]) -> None:
        uncounted = self._uncounted
        for event in events:
            if event.kind == "task":
                task: pb.Task = event.obj
                if not_indexed_yet(uncounted, event):
                    continue
                old: pb.Task | None = event.old
                if event.action == DELETE:
                    self._forget(task)
                    continue
                if old is not None and _may_move(old, task) and self._slot_of(old) != self._slot_of(task):
                    self._forget(old)
                    old = None  # new to its slot
                if old is None or _may_free(task) or _may_free(old):
                    self._mark(task)
            elif event.kind == "service" and event.action == DELETE:
                # Its ended tasks: the others get an event of their own when the orchestrator
                # marks them for removal (a look at each of 100,000 slots here held the apply).
                for task in self.store.view.service_tasks(event.obj.id):
                    if _may_free(task) and task.id not in uncounted:
                        self._mark(task)

    # ------------------------------------------------------------------ the index

    @staticmethod
    def _slot_of(task: pb.Task) -> SlotKey:
        return (task.service_id, task.slot, task.node_id if task.slot == 0 else "")

    def _clear(self) -> None:
        self._slots.clear()
        self._service_ids.clear()
        self._dirty.clear()
        self._backlog.clear()

    def index(self) -> dict[SlotKey, set[str]]:
        """The index as one set of task IDs per slot (tests compare it with a scan)."""
        return {
            (service, slot, "") if isinstance(slot, int) else (service, 0, slot): set(_ids(held))
            for service, slots in self._slots.items()
            for slot, held in slots.items()
        }

    def _mark(self, task: pb.Task) -> None:
        """Know ``task`` in its slot, and look at the slot in the next round, unless it is the
        slot's only task and a live one: nothing there to prune (each new replica of a service
        cost a look at its slot in the next round: 10,000 looks for ``--replicas 10000``)."""
        key = self._slot_of(task)
        service = self._service_ids.setdefault(key[0], key[0])
        slots = self._slots.get(service)
        if slots is None:
            slots = self._slots[service] = {}
        slot = _in_service(key)
        held = slots.get(slot)
        task_id = intern(task.id)  # the view's own copy of the ID (``ReadView.put``)
        if held is None or held == task_id:
            slots[slot] = task_id
            alone = True
        elif isinstance(held, str):
            slots[slot] = {held, task_id}
            alone = False
        else:
            held.add(task_id)
            alone = False
        if not alone or _may_free(task):
            self._dirty.add(key)
            self._work.set()

    def _forget(self, task: pb.Task) -> None:
        key = self._slot_of(task)
        slots = self._slots.get(key[0])
        if slots is None:
            return
        slot = _in_service(key)
        held = slots.get(slot)
        if held is None:
            return
        if isinstance(held, str):
            if held != task.id:
                return
            del slots[slot]
        else:
            held.discard(task.id)
            if len(held) == 1:
                slots[slot] = next(iter(held))
        if not slots:
            del self._slots[key[0]]
            self._service_ids.pop(key[0], None)

    def _slot_tasks(self, tx: Tx, key: SlotKey) -> list[pb.Task]:
        """The slot's tasks as the transaction sees them (one committed in the same group
        before it may have deleted some: those are left out, and its applies fix the index)."""
        tasks = []
        slots = self._slots.get(key[0])
        for task_id in _ids(slots.get(_in_service(key)) if slots is not None else None):
            task = tx.task(task_id)
            if task is not None:
                tasks.append(task)
        return tasks

    def _reap(self, tx: Tx, backlog: deque[SlotKey], taken: list[SlotKey]) -> None:
        """Look at the slots of ``backlog`` in order (each one taken is moved to ``taken``)
        until the transaction holds MAX_DELETES_PER_COMMIT deletions."""
        limit = self._history_limit()
        while backlog and len(tx) < MAX_DELETES_PER_COMMIT:
            key = backlog.popleft()
            taken.append(key)
            self._reap_slot(tx, key, self._slot_tasks(tx, key), limit)

    def _reap_slot(self, tx: Tx, key: SlotKey, tasks: list[pb.Task], limit: int) -> None:
        """Delete what the slot no longer needs: removable tasks, and history beyond ``limit``."""
        service = tx.service(key[0])
        keep = limit
        if service is not None and service.spec.task.restart.max_attempts > 0:
            keep = max(keep, int(service.spec.task.restart.max_attempts) + 1)
        history = []
        for task in tasks:
            if removable(task) or (service is None and states.is_terminal(task.status.state)):
                tx.delete("task", task.id)
            elif states.is_terminal(task.status.state) and task.desired_state > states.RUNNING:
                history.append(task)
        if limit < 0:
            return
        live = len([t for t in tasks if t.desired_state <= states.RUNNING])
        excess = len(history) + live - keep
        if excess <= 0:
            return
        history.sort(key=lambda t: t.status.applied_at or t.status.timestamp)
        for task in history[:excess]:
            tx.delete("task", task.id)
