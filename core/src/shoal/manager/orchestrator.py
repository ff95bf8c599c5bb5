"""The replicated orchestrator.

It keeps every replicated service at its replica count: it creates tasks in the lowest free
slots, removes surplus slots from the nodes that hold the most copies, and replaces tasks that
stopped (per the service's restart policy) or whose node went down or was drained, through its
restart supervisor (``restarts.py``). It only writes desired state; the scheduler places tasks
and agents report what really happens.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import defaultdict, deque
from collections.abc import Iterable

from shoal import states
from shoal.looppieces import in_pieces
from shoal.manager import jobs
from shoal.manager.liveslots import LiveSlots
from shoal.manager.restarts import RestartSupervisor, adoption_concerns
from shoal.manager.servicemodes import global_eligible, is_global
from shoal.manager.tasks import new_task, node_unavailable, restart_policy, task_template
from shoal.manager.updater import UpdateSupervisor
from shoal.proto import objects_pb2 as pb
from shoal.roles.store import StoreUnavailable
from shoal.store.memory import DELETE, Event, ObjectStore, ReadView, Tx, copy

__all__ = [
    "ReplicatedOrchestrator",
    "global_eligible",
    "is_global",
    "new_task",
    "node_unavailable",
    "restart_policy",
]

log = logging.getLogger("shoal.orchestrator")

#: Tasks a service's reconciliation creates per store transaction; the rest in the next one.
#: Creating 10,000 in one transaction held the leader's event loop for seconds (building it,
#: applying it, waking every watcher), long enough to miss Raft heartbeats.
MAX_CREATES_PER_COMMIT = 500
#: Tasks replaced per store transaction (each is two changes: the old task shut down, its
#: replacement created); the rest in the next one. A thousand nodes marked Down at once with
#: 100 tasks each were one transaction of 200,000 changes: the leader's loop held for seconds.
MAX_RESTARTS_PER_COMMIT = MAX_CREATES_PER_COMMIT // 2
#: Tasks a new leader's orchestrator checks per loop step at start.
CHECKED_PER_STEP = 5_000
#: Events taken in per loop step (the rest after a yield).
EVENTS_PER_STEP = 2000
#: After the store refused a reconciliation, when it is tried again if no event comes first.
RETRY_AFTER = 1.0


def _runnable_slots_scanned(tx: Tx, service_id: str) -> set[int]:
    """The slots of the service with a task wanted running, as the transaction sees them
    (its own changes included: a replacement it created keeps its slot alive).

    One pass over the service's tasks reading two fields each: at 100,000 replicas a
    reconciliation (a scale, a new leader's first) looked each task up through the
    transaction and grouped it by slot, half a second of the leader's loop."""
    own = tx.own_changes("task")
    tasks = tx.view.service_tasks(service_id)
    if not own:
        return {t.slot for t in tasks if t.desired_state <= states.RUNNING}
    slots = {t.slot for t in tasks if t.desired_state <= states.RUNNING and t.id not in own}
    slots.update(
        t.slot
        for t in own.values()
        if t is not None and t.service_id == service_id and t.desired_state <= states.RUNNING
    )
    return slots


def _runnable_slot_tasks(tx: Tx, service_id: str) -> dict[int, list[pb.Task]]:
    """Every task of each slot that has one wanted running (what a scale down ranks)."""
    slots: dict[int, list[pb.Task]] = defaultdict(list)
    for stored in tx.view.service_tasks(service_id):
        task = tx.task(stored.id)
        if task is not None:
            slots[task.slot].append(task)
    for task in tx.own_changes("task").values():
        if task is not None and task.service_id == service_id and task not in slots[task.slot]:
            slots[task.slot].append(task)
    return {slot: tasks for slot, tasks in slots.items() if any(states.is_runnable(t) for t in tasks)}


class ReplicatedOrchestrator:
    """Reconciles replicated and global services and rolls out spec changes; leader only.

    (The name is SwarmKit's; global services are reconciled here too: one task per eligible
    node, created pre-assigned to it.)
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        #: Each service's live slots, kept as the store applies (built when the loop starts).
        self.live = LiveSlots(store)
        self.updates = UpdateSupervisor(store, self.live)
        self._dirty: set[str] = set()
        #: (task id, reason) to restart, MAX_RESTARTS_PER_COMMIT per transaction, oldest first.
        self._restarts: deque[tuple[str, str]] = deque()
        self.restarts = RestartSupervisor(
            store,
            needs_restart=self._needs_restart,
            slot_freed=self._mark_dirty,
            owned_elsewhere=self.updates.owns,
        )
        # An update's READY task it will not start (cancelled, or its promotion refused) is
        # handed to the restart supervisor; one it will start is not adopted on its event
        # (which scanned every task of the service once per new task of a rolling update).
        self.updates.orphaned = self.restarts.adopt
        #: Services still being filled up in pieces: (the service's store version when their
        #: free slots were found, the free slots not filled yet). A piece continues from here
        #: instead of scanning every task of the service again: 100,000 replicas were 200
        #: scans of up to 100,000 tasks (and as many rolling-update checks), 85 s of the loop.
        self._filling: dict[str, tuple[int, list[int]]] = {}
        #: Removed services' tasks not yet marked for removal, marked in pieces the same way.
        self._removing: dict[str, list[str]] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    def _mark_dirty(self, service_id: str) -> None:
        self._dirty.add(service_id)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="orchestrator")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self.restarts.stop()
        await self.updates.stop()
        self.live.stop()

    # ------------------------------------------------------------------ event loop

    async def _run(self) -> None:
        with self.store.watch(["service", "task", "node"]) as watch:
            view = self.store.view
            self._dirty.update(s.id for s in view.services.all())
            await self.live.start_in_pieces()
            await self._check_tasks_at_start()
            while True:
                retry = await self._process()
                try:
                    # Work the store refused is tried again after a pause even if nothing
                    # else happens (a replaced task's node going down happens once).
                    async with asyncio.timeout(RETRY_AFTER if retry else None):
                        events = [await watch.get(), *watch.drain()]
                except TimeoutError:
                    continue
                await self._handle(events)

    async def _handle(self, events: list[Event]) -> None:
        """Take in the events EVENTS_PER_STEP at a time, yielding the loop between: while
        100,000 replicas started, the events of its pieces (their creation, placement and
        every status) piled up during one reconciliation and were then taken in in one
        stretch of over a second."""
        async for piece in in_pieces(events, EVENTS_PER_STEP):
            for event in piece:
                self._on_event(event)

    def _on_event(self, event: Event) -> None:
        self.restarts.on_event(event)
        if event.kind == "service":
            self._dirty.add(event.obj.id)
        elif event.kind == "task":
            task: pb.Task = event.obj
            if event.action == DELETE:
                if task.desired_state <= states.RUNNING:
                    self._dirty.add(task.service_id)
                return
            if task.desired_state <= states.RUNNING and self._changed_to_restart(task, event.old):
                self._restarts.append((task.id, "task"))
        elif event.kind == "node":
            node = None if event.action == DELETE else event.obj
            # Global services follow the node set: a new, returning or relabelled node may need
            # (or no longer want) their task.
            self._dirty.update(
                s.id for s in self.store.view.services.all() if is_global(s) or jobs.is_global_job(s)
            )
            if node_unavailable(node):
                for task in self.store.view.node_tasks(event.obj.id):
                    if task.desired_state <= states.RUNNING:
                        self._restarts.append((task.id, "node"))

    def _needs_restart(self, task: pb.Task) -> bool:
        if states.is_terminal(task.status.state):
            return True
        return bool(task.node_id) and node_unavailable(self.store.view.nodes.get(task.node_id))

    def _changed_to_restart(self, task: pb.Task, old: pb.Task | None) -> bool:
        """``_needs_restart`` for a task event, without looking up the node when the task did
        not come to it with this change (its node going down is the node's event, which asks
        for the restart of every task there): most task events are a status on the way up."""
        if states.is_terminal(task.status.state):
            return True
        if not task.node_id:
            return False
        if old is not None and old.node_id == task.node_id and old.desired_state <= states.RUNNING:
            return False
        return node_unavailable(self.store.view.nodes.get(task.node_id))

    async def _check_tasks_at_start(self) -> None:
        """Repair what a lost event would have fixed (SwarmKit's CheckTasks), looking at
        CHECKED_PER_STEP tasks per loop step: a new leader over 100,000 tasks looked at them
        all in one step. A task changed meanwhile has an event of its own in the watch.

        A task of a service that is gone and not marked for removal yet makes its service
        reconciled (which marks them all, ``_remove_all``): a leader lost while marking a
        removed service's tasks (500 a transaction) left the rest running for good, as the
        new leader reconciles only the services that exist (3,000 of 10,000 replicas stayed
        on 1,000 hollow nodes after an election in a ``service rm``)."""
        view = self.store.view
        tasks = list(view.tasks.items.values())
        waiting: list[pb.Task] = []  # what the restart supervisor adopts, and what they wait for
        async for piece in in_pieces(tasks, CHECKED_PER_STEP):
            for task in piece:
                if task.desired_state <= states.RUNNING and self._needs_restart(task):
                    self._restarts.append((task.id, "startup"))
                if adoption_concerns(task):
                    waiting.append(task)
                if (
                    task.desired_state < states.REMOVE
                    and task.service_id
                    and view.services.get(task.service_id) is None
                ):
                    self._dirty.add(task.service_id)
        self.restarts.check_at_start(waiting)

    async def _process(self) -> bool:
        """Reconcile what changed; True when the store refused it (to be tried again)."""
        while self._dirty or self._restarts or self._filling or self._removing:
            dirty, self._dirty = self._dirty, set()
            restarts = self._take_restarts()
            try:
                await self.store.update(functools.partial(self._reconcile, dirty=dirty, restarts=restarts))
                for service_id in dirty:
                    service = self.store.view.services.get(service_id)
                    if service is None or jobs.is_job(service):  # jobs re-run, never roll out
                        await self.updates.forget(service_id)
                    else:
                        await self.updates.update(service)
            except StoreUnavailable as exc:
                log.warning("orchestrator could not commit: %s", exc)
                # Nothing of it was written: all of it again, or tasks on a node that went
                # down would stay desired RUNNING there (their node's event came once).
                self._dirty.update(dirty, self._filling, self._removing)  # reconciled whole
                self._restarts.extendleft(reversed(restarts))
                self._filling.clear()
                self._removing.clear()
                return True
        return False

    def _take_restarts(self) -> list[tuple[str, str]]:
        """The next piece of the restarts asked for (the rest stay queued, in order)."""
        queued = self._restarts
        return [queued.popleft() for _ in range(min(len(queued), MAX_RESTARTS_PER_COMMIT))]

    # ------------------------------------------------------------------ reconcile

    def _reconcile(self, tx: Tx, dirty: set[str], restarts: list[tuple[str, str]]) -> None:
        for task_id, _ in restarts:
            self.restarts.restart_requested(tx, task_id)
        for service_id in [s for s in self._filling if s not in dirty]:
            self._continue_filling(tx, service_id)
        for service_id in [s for s in self._removing if s not in dirty]:
            self._mark_removed(tx, service_id, self._removing.pop(service_id))
        for service_id in dirty:
            self._filling.pop(service_id, None)  # reconciled whole: its free slots found again
            self._removing.pop(service_id, None)
            service = tx.service(service_id)
            if service is None:
                self._remove_all(tx, service_id)
            elif jobs.is_job(service):
                self._reconcile_job(tx, service)
            elif is_global(service):
                self._reconcile_global(tx, service)
            else:
                self._reconcile_service(tx, service)

    def _remove_all(self, tx: Tx, service_id: str) -> None:
        """Mark every task of a removed service for removal, MAX_CREATES_PER_COMMIT a
        transaction (``service rm`` of 10,000 replicas was one entry of 10,000 changes, which
        every manager applied in one go)."""
        view = tx.view
        if isinstance(view, ReadView):  # the IDs alone (each piece looks at its tasks): a pass
            tasks = list(view.tasks_by_service.get(service_id, ()))  # over 110,000 held the loop
        else:
            tasks = [t.id for t in view.service_tasks(service_id) if t.desired_state < states.REMOVE]
        self._mark_removed(tx, service_id, tasks)

    def _mark_removed(self, tx: Tx, service_id: str, task_ids: list[str]) -> None:
        for task_id in task_ids[:MAX_CREATES_PER_COMMIT]:
            current = tx.task(task_id)
            if current is not None and current.desired_state < states.REMOVE:
                current = copy(current)
                current.desired_state = states.REMOVE
                tx.update(current)
        rest = task_ids[MAX_CREATES_PER_COMMIT:]
        if rest:
            self._removing[service_id] = rest

    def _reconcile_service(self, tx: Tx, service: pb.Service) -> None:
        replicas = service.spec.replicated.replicas
        runnable = self._runnable_slots(tx, service.id)
        if len(runnable) > replicas:
            self._scale_down(tx, _runnable_slot_tasks(tx, service.id), replicas)
        elif len(runnable) < replicas:
            free = (n for n in range(1, 1 << 62) if n not in runnable)
            self._fill(tx, service, list(itertools.islice(free, replicas - len(runnable))))

    def _runnable_slots(self, tx: Tx, service_id: str) -> set[int]:
        """The service's slots with a task wanted running, as the transaction sees them: from
        the live-slot index kept as the store applies, corrected by what the transactions
        before this one in its group and this one changed (a pass over the service's tasks
        until the index is built)."""
        if not self.live.ready or tx.store is not self.store:
            return _runnable_slots_scanned(tx, service_id)
        latest: dict[str, pb.Task | None] = {}
        for kind, action, obj in tx.group_changes():
            if kind == "task":
                latest[obj.id] = None if action == DELETE else obj
        latest.update(tx.own_changes("task"))
        committed = self.store.view.tasks.items
        changed = ((committed.get(task_id), task) for task_id, task in latest.items())
        return self.live.runnable_slots(service_id, changed)  # type: ignore[return-value] # replicated: numbers

    def _fill(self, tx: Tx, service: pb.Service, slots: list[int]) -> None:
        """Create tasks in the first MAX_CREATES_PER_COMMIT of ``slots``; the rest in the next
        transaction (``_process`` loops while a service is being filled)."""
        template = task_template(service)
        for slot in slots[:MAX_CREATES_PER_COMMIT]:
            tx.create(new_task(service, slot, template=template))
        rest = slots[MAX_CREATES_PER_COMMIT:]
        if rest:
            self._filling[service.id] = (service.meta.version, rest)

    def _continue_filling(self, tx: Tx, service_id: str) -> None:
        """The next piece of a service's new tasks, in the slots found free when it was last
        reconciled whole, as long as the service is the version it was then (a changed or
        removed service is reconciled whole again: its events marked it dirty)."""
        version, slots = self._filling.pop(service_id)
        service = tx.service(service_id)
        if service is None or service.meta.version != version:
            self._dirty.add(service_id)
            return
        self._fill(tx, service, slots)

    def _reconcile_global(self, tx: Tx, service: pb.Service) -> None:
        """One task on every eligible node; none on the others (paused nodes are left alone)."""
        by_node: dict[str, list[pb.Task]] = defaultdict(list)
        for stored in tx.view.service_tasks(service.id):
            task = tx.task(stored.id)
            if task is not None and states.is_runnable(task):
                by_node[task.node_id].append(task)
        nodes = {node.id: node for node in tx.view.nodes.all()}
        for node_id, tasks in by_node.items():
            node = nodes.get(node_id)
            if node is None or not global_eligible(node, service):
                for task in tasks:
                    self._shutdown(tx, task)
        for node in nodes.values():
            if node.spec.availability == pb.NodeSpec.PAUSE or not global_eligible(node, service):
                continue
            if not by_node.get(node.id):
                task = new_task(service, 0)
                task.node_id = node.id
                task.annotations.name = f"{service.spec.annotations.name}.{node.id}"
                tx.create(task)

    @staticmethod
    def _reconcile_job(tx: Tx, service: pb.Service) -> None:
        fit = {node.id for node in tx.view.nodes.all() if global_eligible(node, service)}
        paused = {node.id for node in tx.view.nodes.all() if node.spec.availability == pb.NodeSpec.PAUSE}
        jobs.reconcile(tx, service, fit, fit - paused)

    @staticmethod
    def _shutdown(tx: Tx, task: pb.Task) -> None:
        if task.desired_state < states.SHUTDOWN:
            task = copy(task)
            task.desired_state = states.SHUTDOWN
            tx.update(task)

    def _scale_down(self, tx: Tx, runnable: dict[int, list[pb.Task]], replicas: int) -> None:
        """Keep ``replicas`` slots, removing first from the nodes that hold the most copies."""

        def live(tasks: list[pb.Task]) -> pb.Task:
            return next(t for t in tasks if states.is_runnable(t))

        ordered = sorted(
            runnable.items(), key=lambda item: (live(item[1]).status.state != states.RUNNING, item[0])
        )
        per_node: dict[str, int] = defaultdict(int)
        ranked = []
        for slot, tasks in ordered:
            node_id = live(tasks).node_id
            if node_id:
                rank = per_node[node_id]
                per_node[node_id] += 1
            else:
                rank = 1 << 30
            ranked.append((rank, slot, tasks))
        ranked.sort(key=lambda item: (item[0], item[1]))
        for _, _, tasks in ranked[replicas:]:
            for task in tasks:
                if task.desired_state < states.REMOVE:
                    task = copy(task)
                    task.desired_state = states.REMOVE
                    tx.update(task)

    def pending_starts(self) -> Iterable[str]:
        return self.restarts.pending_starts()
