"""The restart supervisor (SwarmKit's ``restart.Supervisor``): replaces the tasks that stopped
or lost their node, and starts each replacement when its time comes.

A replacement is created with desired state READY (the agent may prepare it, never start it)
and promoted to RUNNING once the service's restart delay has passed and its old task has
stopped (or its node is down or gone, or ``OLD_TASK_TIMEOUT`` passed): two copies of a slot
never run at once for longer than that. Leader only; its timers live in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from shoal import states
from shoal.manager import jobs
from shoal.manager.servicemodes import global_eligible, is_global
from shoal.manager.tasks import new_task, restart_policy
from shoal.proto import objects_pb2 as pb
from shoal.roles.store import StoreUnavailable
from shoal.store.memory import Event, ObjectStore, Tx, copy

__all__ = ["OLD_TASK_TIMEOUT", "RestartSupervisor"]

log = logging.getLogger("shoal.orchestrator")

OLD_TASK_TIMEOUT = 60.0


class RestartSupervisor:
    """Restarts tasks per their service's restart policy and promotes the replacements.

    ``needs_restart`` says whether a task (desired at most RUNNING) must be replaced;
    ``slot_freed`` is told of a job's service whose finished task left room for its next one.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        needs_restart: Callable[[pb.Task], bool],
        slot_freed: Callable[[str], None],
    ) -> None:
        self.store = store
        self._needs_restart = needs_restart
        self._slot_freed = slot_freed
        self._delayed: dict[str, asyncio.Task[None]] = {}
        self._deferred: set[str] = set()
        self._restart_history: dict[tuple[str, int, int], list[float]] = defaultdict(list)
        #: Replacements waiting for their old task to stop, by (kind, ID) of what they wait on
        #: (the old task, its node): woken from the orchestrator's own watch (``on_event``).
        self._waiting: dict[tuple[str, str], set[asyncio.Event]] = defaultdict(set)

    async def stop(self) -> None:
        tasks = list(self._delayed.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._delayed.clear()

    def on_event(self, event: Event) -> None:
        """Wake the replacements waiting on this task or node."""
        for waiter in self._waiting.get((event.kind, event.obj.id), ()):
            waiter.set()

    def check_at_start(self, task: pb.Task) -> None:
        """A task left desired READY by an earlier leader: start it after its restart delay."""
        if task.desired_state == states.READY and task.status.state <= states.RUNNING:
            self._schedule_start(task, restart_policy(task).delay)

    def restart_requested(self, tx: Tx, task_id: str) -> None:
        """Restart the task if it (still) needs it, inside the orchestrator's transaction."""
        if task_id in self._delayed:
            # Still inside its own restart delay (e.g. its image pull failed while it was
            # only being prepared): restart it when that delay ends, not now, so a task
            # that fails at once cannot spin in a tight loop.
            self._deferred.add(task_id)
            return
        self._restart_if_needed(tx, task_id)

    def _restart_if_needed(self, tx: Tx, task_id: str) -> None:
        task = tx.task(task_id)
        if task is None or task.desired_state > states.RUNNING or not self._needs_restart(task):
            return
        self._restart(tx, task)

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
            replacement = new_task(service, task.slot, desired=states.READY)
        if is_global(service):
            replacement.node_id = task.node_id
            replacement.annotations.name = task.annotations.name
        tx.create(replacement)
        draining = node is not None and node.spec.availability == pb.NodeSpec.DRAIN
        self._schedule_start(replacement, 0.0 if draining else policy.delay, old_task_id=task.id)

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

    def _schedule_start(self, task: pb.Task, delay: float, old_task_id: str = "") -> None:
        """After the restart delay (and once the old task stopped), let the replacement run."""
        if task.id in self._delayed:
            return
        self._delayed[task.id] = asyncio.create_task(
            self._delayed_start(task.id, delay, old_task_id), name=f"restart-{task.id}"
        )

    async def _delayed_start(self, task_id: str, delay: float, old_task_id: str) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            await self._wait_old_task(old_task_id)

            self._delayed.pop(task_id, None)

            def promote(tx: Tx) -> None:
                if task_id in self._deferred:
                    self._deferred.discard(task_id)
                    self._restart_if_needed(tx, task_id)
                    return
                task = tx.task(task_id)
                if task is not None and task.desired_state == states.READY:
                    task = copy(task)
                    task.desired_state = states.RUNNING
                    tx.update(task)

            await self.store.update(promote)
        except StoreUnavailable as exc:
            log.warning("could not start task %s: %s", task_id, exc)
        finally:
            self._delayed.pop(task_id, None)

    async def _wait_old_task(self, old_task_id: str) -> None:
        """Until the old task stopped, its node is gone or down, or OLD_TASK_TIMEOUT.

        Woken by the orchestrator's own watch for the old task and its node only: each waiter
        had a store watch, and thousands of replacements waiting at once (nodes lost at scale)
        had every task event checked against each of them."""
        if not old_task_id:
            return
        deadline = time.monotonic() + OLD_TASK_TIMEOUT
        waited = self.store.view.tasks.get(old_task_id)
        keys = [("task", old_task_id), ("node", waited.node_id if waited is not None else "")]
        woken = asyncio.Event()
        for key in keys:
            self._waiting[key].add(woken)
        try:
            while time.monotonic() < deadline:
                woken.clear()
                old = self.store.view.tasks.get(old_task_id)
                if old is None or states.is_terminal(old.status.state):
                    return
                node = self.store.view.nodes.get(old.node_id) if old.node_id else None
                if old.node_id and (node is None or node.status.state == pb.NodeStatus.DOWN):
                    return
                if not old.node_id:
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
