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
from shoal.store.memory import DELETE, ObjectStore, Tx

log = logging.getLogger("shoal.reaper")

TICK = 0.25


def removable(task: pb.Task) -> bool:
    """A task marked REMOVE whose container is gone or never existed."""
    if task.desired_state < states.REMOVE:
        return False
    return not task.node_id or task.status.state >= states.COMPLETE or task.status.state < states.ASSIGNED


class TaskReaper:
    """Runs on the leader; prunes in batches every 250 ms while there is work."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._dirty: set[tuple[str, int, str]] = set()
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
                        self._mark(ev.obj)
                    elif ev.kind == "service" and ev.action == DELETE:
                        for task in self.store.view.service_tasks(ev.obj.id):
                            self._mark(task)

    def _mark(self, task: pb.Task) -> None:
        key_node = task.node_id if task.slot == 0 else ""
        self._dirty.add((task.service_id, task.slot, key_node))

    def _reap(self, tx: Tx, dirty: set[tuple[str, int, str]]) -> None:
        limit = self._history_limit()
        by_slot: dict[tuple[str, int, str], list[pb.Task]] = defaultdict(list)
        services = {service_id for service_id, _, _ in dirty}
        for service_id in services:
            for task in tx.view.service_tasks(service_id):
                key = (service_id, task.slot, task.node_id if task.slot == 0 else "")
                if key in dirty:
                    by_slot[key].append(task)
        for key, tasks in by_slot.items():
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
                continue
            live = len([t for t in tasks if t.desired_state <= states.RUNNING])
            excess = len(history) + live - keep
            if excess <= 0:
                continue
            history.sort(key=lambda t: t.status.applied_at or t.status.timestamp)
            for task in history[:excess]:
                tx.delete("task", task.id)
