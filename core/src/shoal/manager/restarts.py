"""The restart supervisor (SwarmKit's ``restart.Supervisor``): replaces the tasks that stopped
or lost their node, and starts each replacement when its time comes.

A replacement is created with desired state READY (the agent may prepare it, never start it)
and promoted to RUNNING once the service's restart delay has passed and its old task has
stopped (or its node is down or gone, or ``OLD_TASK_TIMEOUT`` passed): two copies of a slot
never run at once for longer than that. Leader only; its timers live in memory.

Every task left at desired READY with nobody to start it is a slot that never runs again (86
of them after a drain of 100 of 1,000 hollow nodes, issue 18), so the supervisor also adopts
the READY tasks it did not create or whose starter is gone: those an earlier leader left
(found at start, or applied after this leader started), those whose promotion the store
refused (retried until it commits), those whose node went down and came back during their
delay, and those of a rolling update that was cancelled (``adopt``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from shoal import states
from shoal.manager import jobs
from shoal.manager.servicemodes import global_eligible, is_global
from shoal.manager.tasks import (
    OLD_TASK_TIMEOUT,
    new_task,
    old_task_gone,
    restart_policy,
    start_now,
    task_template,
)
from shoal.proto import objects_pb2 as pb
from shoal.roles.store import StoreUnavailable
from shoal.store.memory import DELETE, Event, ObjectStore, Tx, copy

__all__ = ["OLD_TASK_TIMEOUT", "RestartSupervisor"]

log = logging.getLogger("shoal.orchestrator")

#: Between two tries of a promotion the store refused (doubling up to the second figure).
PROMOTE_RETRY = (0.1, 2.0)


def _slot_of(task: pb.Task) -> tuple[str, int, str]:
    """The slot a task fills: replicated by number, global by node."""
    return (task.service_id, task.slot, task.node_id if task.slot == 0 else "")


def _stopping(task: pb.Task) -> bool:
    """Shut down on purpose but, as far as the store knows, still on its node."""
    return task.desired_state > states.RUNNING and states.ASSIGNED <= task.status.state <= states.RUNNING


def adoption_concerns(task: pb.Task) -> bool:
    """Whether ``check_at_start`` looks at the task: one left desired READY (to adopt) or one
    stopping (what a READY task of its slot waits for)."""
    return task.desired_state == states.READY or _stopping(task)


class RestartSupervisor:
    """Restarts tasks per their service's restart policy and promotes the replacements.

    ``needs_restart`` says whether a task (desired at most RUNNING) must be replaced;
    ``slot_freed`` is told of a job's service whose finished task left room for its next one;
    ``owned_elsewhere`` says whether another component (a rolling update) will start a READY
    task itself.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        needs_restart: Callable[[pb.Task], bool],
        slot_freed: Callable[[str], None],
        owned_elsewhere: Callable[[str], bool] = lambda task_id: False,
    ) -> None:
        self.store = store
        self._needs_restart = needs_restart
        self._slot_freed = slot_freed
        self._owned_elsewhere = owned_elsewhere
        #: Every replacement being started, until its promotion committed (or it gave up).
        self._delayed: dict[str, asyncio.Task[None]] = {}
        #: Those still inside their restart delay or waiting for their old task: a restart
        #: asked for meanwhile is deferred to the end of the wait (``_deferred``).
        self._in_delay: set[str] = set()
        self._deferred: set[str] = set()
        self._restart_history: dict[tuple[str, int, int], list[float]] = defaultdict(list)
        #: Replacements waiting for their old task to stop, by (kind, ID) of what they wait on
        #: (the old task, its node): woken from the orchestrator's own watch (``on_event``).
        self._waiting: dict[tuple[str, str], set[asyncio.Event]] = defaultdict(set)
        self._stopped = False
        self._templates: dict[str, tuple[pb.Service, pb.Task]] = {}

    async def stop(self) -> None:
        self._stopped = True
        tasks = list(self._delayed.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._delayed.clear()

    async def _sleep(self, delay: float) -> None:
        """The restart delay (a seam for tests that must decide when it ends)."""
        await asyncio.sleep(delay)

    # ------------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        """Wake the replacements waiting on this task or node; adopt a READY task nobody starts
        (one applied after this leader started: its creator's timer died with its leadership)."""
        for waiter in self._waiting.get((event.kind, event.obj.id), ()):
            waiter.set()
        if event.kind != "task" or event.action == DELETE or event.obj.desired_state != states.READY:
            return
        if event.obj.id in self._delayed or self._owned_elsewhere(event.obj.id):
            return
        current = self.store.view.tasks.get(event.obj.id)  # the event may be older than the view
        if current is not None and current.desired_state == states.READY:
            slot = _slot_of(current)
            siblings = self.store.view.service_tasks(current.service_id)
            self.adopt(current, [t.id for t in siblings if _stopping(t) and _slot_of(t) == slot])

    def check_at_start(self, tasks: Iterable[pb.Task]) -> None:
        """Adopt every task an earlier leader left desired READY (SwarmKit's CheckTasks), each
        waiting for what is left of its restart delay and for the old tasks of its slot."""
        ready: list[pb.Task] = []
        stopping: dict[tuple[str, int, str], list[str]] = defaultdict(list)
        for task in tasks:
            if task.desired_state == states.READY:
                ready.append(task)
            elif _stopping(task):
                stopping[_slot_of(task)].append(task.id)
        for task in ready:
            self.adopt(task, stopping.get(_slot_of(task), []))

    def adopt(self, task: pb.Task, old_task_ids: list[str]) -> None:
        """Start a READY task nobody else will start: after what is left of its restart delay
        (counted from its last status) and once ``old_task_ids`` stopped (bounded wait)."""
        if self._stopped or task.status.state > states.RUNNING:
            return
        delay = restart_policy(task).delay
        remaining = min(delay, max(0.0, task.status.timestamp + delay - time.time()))
        self._schedule_start(task, remaining, old_task_ids)

    # ------------------------------------------------------------------ restarts

    def restart_requested(self, tx: Tx, task_id: str) -> None:
        """Restart the task if it (still) needs it, inside the orchestrator's transaction."""
        if task_id in self._in_delay:
            # Still inside its own restart delay (e.g. its image pull failed while it was
            # only being prepared): restart it when that delay ends, not now, so a task
            # that fails at once cannot spin in a tight loop.
            self._deferred.add(task_id)
            return
        self._restart_if_needed(tx, task_id)

    def _restart_if_needed(self, tx: Tx, task_id: str) -> bool:
        task = tx.task(task_id)
        if task is None or task.desired_state > states.RUNNING or not self._needs_restart(task):
            return False
        self._restart(tx, task)
        return True

    def _restart(self, tx: Tx, task: pb.Task) -> None:
        service = tx.service(task.service_id)
        if service is not None and jobs.is_job(service) and task.status.state == states.COMPLETE:
            jobs.finished(tx, task)
            self._slot_freed(service.id)  # room for the job's next task
            return
        old = copy(task)
        old.desired_state = states.SHUTDOWN
        tx.update(old)
        if service is None:
            return
        node = tx.node(task.node_id) if task.node_id else None
        one_per_node = is_global(service) or jobs.is_global_job(service)
        if one_per_node and (node is None or not global_eligible(node, service)):
            return  # a global task is not moved: its node is gone, down, drained or unfit
        policy = restart_policy(task)
        if not self._should_restart(task, policy):
            return
        if jobs.is_job(service):
            replacement = jobs.replacement(service, task)
        else:
            replacement = new_task(service, task.slot, desired=states.READY, template=self._template(service))
        if is_global(service):
            replacement.node_id = task.node_id
            replacement.annotations.name = task.annotations.name
        tx.create(replacement)
        draining = node is not None and node.spec.availability == pb.NodeSpec.DRAIN
        self._schedule_start(replacement, 0.0 if draining else policy.delay, [task.id])

    def _template(self, service: pb.Service) -> pb.Task:
        """The replacements' template for this service object (the store's objects are never
        changed in place: a new version is a new object), made once for the many replacements
        of a node lost: 100 tasks a node, 1,000 nodes at once."""
        cached = self._templates.get(service.id)
        if cached is not None and cached[0] is service:
            return cached[1]
        if len(self._templates) >= 64:
            self._templates.clear()
        template = task_template(service, states.READY)
        self._templates[service.id] = (service, template)
        return template

    def _should_restart(self, task: pb.Task, policy: pb.RestartPolicy) -> bool:
        if policy.condition == pb.RestartPolicy.NONE:
            return False
        if policy.condition == pb.RestartPolicy.ON_FAILURE and task.status.state == states.COMPLETE:
            return False
        if policy.max_attempts > 0:
            key = (task.service_id, task.slot, task.spec_version)
            history = self._restart_history[key]
            if policy.window > 0:
                horizon = task.status.timestamp - policy.window
                history[:] = [t for t in history if t >= horizon]
            if len(history) >= policy.max_attempts:
                return False
            history.append(task.status.timestamp or time.time())
        return True

    # ------------------------------------------------------------------ delayed starts

    def _schedule_start(self, task: pb.Task, delay: float, old_task_ids: list[str]) -> None:
        """After the restart delay (and once the old tasks stopped), let the replacement run."""
        if task.id in self._delayed or self._stopped:
            return
        self._in_delay.add(task.id)
        self._delayed[task.id] = asyncio.create_task(
            self._delayed_start(task.id, delay, old_task_ids), name=f"restart-{task.id}"
        )

    async def _delayed_start(self, task_id: str, delay: float, old_task_ids: list[str]) -> None:
        try:
            if delay > 0:
                await self._sleep(delay)
            deadline = time.monotonic() + OLD_TASK_TIMEOUT
            for old_task_id in old_task_ids:
                await self._wait_old_task(old_task_id, deadline)
            await self._promote(task_id)
        finally:
            self._in_delay.discard(task_id)
            if self._delayed.get(task_id) is asyncio.current_task():
                del self._delayed[task_id]

    async def _promote(self, task_id: str) -> None:
        """Start the task, or restart it if that was asked for during its delay and is still
        needed; retried until the store takes it (a refused write left it READY for good)."""
        retry, most = PROMOTE_RETRY
        while True:
            try:
                await self.store.update(functools.partial(self._start_or_restart, task_id=task_id))
                self._deferred.discard(task_id)
                return
            except StoreUnavailable as exc:
                log.warning("could not start task %s, retrying in %.1f s: %s", task_id, retry, exc)
            self._in_delay.add(task_id)
            await asyncio.sleep(retry)
            retry = min(most, retry * 2)

    def _start_or_restart(self, tx: Tx, task_id: str) -> None:
        self._in_delay.discard(task_id)  # a restart asked for from here on is not deferred
        # A restart asked for during the delay whose cause has passed (its node went down and
        # came back) leaves the task to start as planned.
        if not (task_id in self._deferred and self._restart_if_needed(tx, task_id)):
            start_now(tx, task_id)

    async def _wait_old_task(self, old_task_id: str, deadline: float | None = None) -> None:
        """Until the old task stopped, its node is gone or down, or the deadline (by default
        OLD_TASK_TIMEOUT from now).

        Woken by the orchestrator's own watch for the old task and its node only: each waiter
        had a store watch, and thousands of replacements waiting at once (nodes lost at scale)
        had every task event checked against each of them."""
        if deadline is None:
            deadline = time.monotonic() + OLD_TASK_TIMEOUT
        waited = self.store.view.tasks.get(old_task_id)
        keys = [("task", old_task_id), ("node", waited.node_id if waited is not None else "")]
        woken = asyncio.Event()
        for key in keys:
            self._waiting[key].add(woken)
        try:
            while time.monotonic() < deadline:
                woken.clear()
                if old_task_gone(self.store.view, old_task_id):
                    return
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await woken.wait()
                except TimeoutError:
                    return
        finally:
            for key in keys:
                waiters = self._waiting.get(key)
                if waiters is not None:
                    waiters.discard(woken)
                    if not waiters:
                        del self._waiting[key]

    def pending_starts(self) -> Iterable[str]:
        return list(self._delayed)
