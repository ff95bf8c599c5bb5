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
from collections import defaultdict

from shoal import defaults, states
from shoal.proto import objects_pb2 as pb
from shoal.roles.store import StoreUnavailable
from shoal.store.memory import CREATE, DELETE, ObjectStore, Tx

log = logging.getLogger("shoal.reaper")

TICK = 0.25
#: Tasks deleted per store transaction; the slots left go to the next round. Reaping a removed
#: service of 10,000 tasks was one entry of 10,000 deletions, applied by every manager at once.
MAX_DELETES_PER_COMMIT = 500


def removable(task: pb.Task) -> bool:
    """A task marked REMOVE whose container is gone or never existed."""
    if task.desired_state < states.REMOVE:
        return False
    return not task.node_id or task.status.state >= states.COMPLETE or task.status.state < states.ASSIGNED


#: A slot: (service ID, slot number, node ID for a global service's task, else "").
SlotKey = tuple[str, int, str]


def _may_free(task: pb.Task | None) -> bool:
    """Whether ``task`` counts in its slot's history or may be deleted: a change of a task
    that was and stays live (its state moving up to RUNNING) changes neither, so it does not
    make the reaper look at the slot (five such changes per task while a service starts)."""
    return task is not None and (task.desired_state > states.RUNNING or states.is_terminal(task.status.state))


class TaskReaper:
    """Runs on the leader; prunes in batches every 250 ms while there is work.

    It keeps the IDs of each slot's tasks from its watch, so a prune looks only at the slots
    that changed: scanning every task of each service that changed, every 250 ms, was most of
    the leader's loop while 100,000 replicas started. The index may lag the view by a loop
    turn or two; every change of a slot is an event that marks it again, so a task it does not
    know of yet is pruned on the next round, and a task it still lists once deleted is skipped.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._dirty: set[SlotKey] = set()
        self._slots: dict[SlotKey, set[str]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="task-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _history_limit(self) -> int:
        cluster = self.store.view.cluster()
        if cluster is None:
            return defaults.TASK_HISTORY_LIMIT
        return int(cluster.spec.orchestration.task_history_retention_limit)

    async def _run(self) -> None:
        with self.store.watch(["task", "service"]) as watch:
            for task in self.store.view.tasks.all():
                self._mark(task)
            while True:
                if self._dirty:
                    dirty, self._dirty = self._dirty, set()
                    try:
                        await self.store.update(functools.partial(self._reap, dirty=dirty))
                    except StoreUnavailable as exc:
                        log.warning("task reaper could not commit: %s", exc)
                event = await watch.get()
                await asyncio.sleep(TICK)
                for ev in [event, *watch.drain()]:
                    if ev.kind == "task" and ev.action != DELETE:
                        self._mark(
                            ev.obj, changed=ev.action == CREATE or _may_free(ev.obj) or _may_free(ev.old)
                        )
                    elif ev.kind == "task":
                        self._forget(ev.obj)
                    elif ev.kind == "service" and ev.action == DELETE:
                        for task in self.store.view.service_tasks(ev.obj.id):
                            self._mark(task)

    @staticmethod
    def _slot_of(task: pb.Task) -> SlotKey:
        return (task.service_id, task.slot, task.node_id if task.slot == 0 else "")

    def _mark(self, task: pb.Task, changed: bool = True) -> None:
        """Know ``task`` in its slot; with ``changed``, look at the slot in the next round."""
        key = self._slot_of(task)
        if changed:
            self._dirty.add(key)
        self._slots[key].add(task.id)

    def _forget(self, task: pb.Task) -> None:
        key = self._slot_of(task)
        ids = self._slots.get(key)
        if ids is not None:
            ids.discard(task.id)
            if not ids:
                del self._slots[key]

    def _slot_tasks(self, tx: Tx, key: SlotKey) -> list[pb.Task]:
        """The slot's tasks as the transaction sees them (IDs it no longer has are dropped)."""
        tasks = []
        ids = self._slots.get(key, set())
        for task_id in list(ids):
            task = tx.task(task_id)
            if task is None:
                ids.discard(task_id)
            else:
                tasks.append(task)
        if not ids:
            self._slots.pop(key, None)
        return tasks

    def _reap(self, tx: Tx, dirty: set[SlotKey]) -> None:
        limit = self._history_limit()
        slots = list(dirty)
        for done, key in enumerate(slots):
            if len(tx) >= MAX_DELETES_PER_COMMIT:
                self._dirty.update(slots[done:])  # the next round
                return
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
