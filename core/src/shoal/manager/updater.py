"""Rolling updates and rollbacks (SwarmKit's update supervisor).

When a service's spec changes, its *dirty* slots — slots whose task runs an older spec — are
replaced a few at a time: ``parallelism`` workers (0 = all at once) each take a slot, replace
its task (stop-first: the old task stops, then the new one starts; start-first: the new one
runs, then the old one stops) and wait ``delay`` before the next. A task of the new spec that
fails before it runs, or within ``monitor`` after it started, counts as a failure; when the
failure ratio passes ``max_failure_ratio`` the update pauses, continues, or rolls back, as the
service asks. After the last slot the updater watches for ``monitor`` more before it marks the
update completed. A rollback is the same walk with the rollback config, back to the previous
spec; a failure during a rollback pauses it (a rollback never rolls back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from shoal import states
from shoal.manager.liveslots import LiveSlots
from shoal.manager.netobjects import networks_differ
from shoal.manager.tasks import OLD_TASK_TIMEOUT, new_task, old_task_gone, start_now
from shoal.proto import objects_pb2 as pb
from shoal.roles.store import StoreUnavailable
from shoal.store.memory import DELETE, ObjectStore, Tx, copy

log = logging.getLogger("shoal.updater")

US = pb.UpdateStatus

#: Called with (service ID, slot key) so that the restart supervisor does not replace a task
#: the updater shut down on purpose.
SlotKey = tuple[int, str]
#: Told of a READY task this update created and will not start after all (cancelled by a
#: newer spec, or the store refused its promotion), with the old tasks it waited for.
Orphaned = Callable[[pb.Task, list[str]], None]


def slot_key(task: pb.Task) -> SlotKey:
    """Replicated tasks are keyed by slot number, global ones by node."""
    return (task.slot, task.node_id if task.slot == 0 else "")


def is_dirty(task: pb.Task, service: pb.Service) -> bool:
    """Whether a task runs something other than the service's current spec.

    A task of the current spec version is clean. Otherwise it is dirty if its task spec or
    endpoint differ from the service's — a version bump that changed neither (a scale, a label)
    replaces nothing. Only the placement changed and the task still fits: not dirty either
    (the constraint enforcer handles tasks that no longer fit).
    """
    if task.spec_version == service.spec_version:
        return False
    if task.endpoint != service.spec.endpoint or networks_differ(task, service):
        return True
    if task.spec == service.spec.task:
        return False
    current = pb.TaskSpec()
    current.CopyFrom(task.spec)
    current.placement.CopyFrom(service.spec.task.placement)
    return current != service.spec.task


def _all_current(tasks: list[pb.Task], spec_version: int) -> bool:
    """Whether no slot needs updating: every live task is of the current spec version and
    alone in its slot. The common case (a scale, a service's pieces being filled, a new
    leader) answered in one pass reading three fields per task, instead of grouping every
    task by slot: at 100,000 replicas a third of a second of the leader's loop."""
    live = [t for t in tasks if t.desired_state <= states.RUNNING]
    if any(t.spec_version != spec_version for t in live):
        return False
    return len({t.slot or t.node_id for t in live}) == len(live)


def update_config(service: pb.Service) -> pb.UpdateConfig:
    """The config that drives the walk: the rollback config while rolling back."""
    rolling_back = service.update_status.state in (US.ROLLBACK_STARTED, US.ROLLBACK_PAUSED)
    if rolling_back and service.spec.HasField("rollback"):
        return service.spec.rollback
    if not rolling_back and service.spec.HasField("update"):
        return service.spec.update
    from shoal.defaults import update_config as defaults

    return defaults()


class Updater:
    """One running update of one service; cancelled when a newer spec arrives."""

    def __init__(
        self,
        store: ObjectStore,
        service: pb.Service,
        dirty: dict[SlotKey, list[pb.Task]],
        orphaned: Orphaned | None = None,
    ) -> None:
        self.store = store
        self.orphaned = orphaned
        #: New tasks created READY, not promoted yet: (the task, the old tasks it waits for).
        self.to_start: dict[str, tuple[pb.Task, list[str]]] = {}
        self.service_id = service.id
        self.spec_version = service.spec_version
        self.rolling_back = service.update_status.state == US.ROLLBACK_STARTED
        self.config = pb.UpdateConfig()
        self.config.CopyFrom(update_config(service))
        self.dirty = dirty
        self.failures = 0
        self._counted: set[str] = set()
        self.created: dict[str, float] = {}  # task id -> when it reached RUNNING (0 = not yet)
        self._stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"update-{self.service_id}")

    async def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    # ------------------------------------------------------------------ status

    async def _set_status(
        self, state: int, message: str, *, only_if: Callable[[pb.Service], bool] | None = None
    ) -> None:
        def update(tx: Tx) -> None:
            service = tx.service(self.service_id)
            if service is None or service.spec_version != self.spec_version:
                return
            if only_if is not None and not only_if(service):
                return
            service = copy(service)
            service.update_status.state = state  # type: ignore[assignment]
            service.update_status.message = message
            now = time.time()
            if state in (US.UPDATING, US.ROLLBACK_STARTED):
                service.update_status.started_at = service.update_status.started_at or now
            if state in (US.COMPLETED, US.ROLLBACK_COMPLETED):
                service.update_status.completed_at = now
            tx.update(service)

        await self.store.update(update)

    # ------------------------------------------------------------------ the walk

    async def _run(self) -> None:
        try:
            await self._walk()
        except StoreUnavailable as exc:
            log.warning("update of service %s interrupted: %s", self.service_id, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("update of service %s failed", self.service_id)
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """The READY tasks this update will not start go to the restart supervisor: a newer
        spec that does not find them dirty would never start them (stuck at READY)."""
        to_start, self.to_start = self.to_start, {}
        if self.orphaned is not None:
            for task, old_ids in to_start.values():
                self.orphaned(task, old_ids)

    async def _walk(self) -> None:
        if not self.rolling_back:
            await self._set_status(
                US.UPDATING,
                "update in progress",
                only_if=lambda s: s.update_status.state in (US.UNKNOWN, US.UPDATING),
            )
        slots: asyncio.Queue[SlotKey | None] = asyncio.Queue()
        for key in sorted(self.dirty):
            slots.put_nowait(key)
        parallelism = int(self.config.parallelism) or len(self.dirty)
        for _ in range(parallelism):
            slots.put_nowait(None)
        monitor = asyncio.create_task(self._watch_failures())
        workers: list[asyncio.Task[None]] = []
        try:
            workers += [asyncio.create_task(self._worker(slots)) for _ in range(parallelism)]
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stop, *workers], return_when=asyncio.FIRST_COMPLETED)
            while not stop.done() and not all(w.done() for w in workers):
                await asyncio.wait([stop, *workers], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if self._stop.is_set():
                return  # paused or rolled back by the failure monitor
            # Watch the last tasks for `monitor` (or delay + 1 s when the delay is longer).
            window = self.config.monitor
            if self.config.delay >= window:
                window = self.config.delay + 1.0
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns when the stop is
                # set as a cancellation (a newer spec, a lost leadership) arrives, swallowing it.
                async with asyncio.timeout(window):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
        finally:
            # Cancelled by a newer spec (or the leader stepping down): the workers stop too,
            # not go on replacing slots for a spec that is gone.
            for task in [monitor, *workers]:
                task.cancel()
            await asyncio.gather(monitor, *workers, return_exceptions=True)
        if self.rolling_back:
            await self._set_status(US.ROLLBACK_COMPLETED, "rollback completed")
        else:
            await self._set_status(US.COMPLETED, "update completed")

    async def _worker(self, slots: asyncio.Queue[SlotKey | None]) -> None:
        while not self._stop.is_set():
            key = await slots.get()
            if key is None:
                return
            await self._update_slot(key)
            if self.config.delay > 0 and not self._stop.is_set():
                try:
                    async with asyncio.timeout(self.config.delay):
                        await self._stop.wait()
                except TimeoutError:
                    pass

    async def _update_slot(self, key: SlotKey) -> None:
        """Replace the slot's old task(s) with one task of the current spec."""
        created: list[pb.Task] = []
        old_ids: list[str] = []
        start_first = self.config.order == pb.UpdateConfig.START_FIRST

        def replace(tx: Tx) -> None:
            service = tx.service(self.service_id)
            if service is None or service.spec_version != self.spec_version:
                return
            tasks = [
                t
                for t in tx.view.service_tasks(self.service_id)
                if slot_key(t) == key and t.desired_state <= states.RUNNING
            ]
            fresh = [t for t in tasks if not is_dirty(t, service)]
            keep = next((t for t in fresh if t.desired_state == states.RUNNING), None)
            if keep is None and fresh:
                keep = copy(fresh[0])
                keep.desired_state = states.RUNNING
                tx.update(keep)
            if keep is not None:
                for task in tasks:
                    if task.id != keep.id:
                        self._shutdown(tx, task)
                return
            slot, node_id = key
            task = new_task(service, slot, desired=states.RUNNING if start_first else states.READY)
            if slot == 0:
                task.node_id = node_id
            tx.create(task)
            created.append(task)
            if not start_first:
                for old in tasks:
                    self._shutdown(tx, old)
                    old_ids.append(old.id)
                # Known as this update's before the orchestrator hears of it (not adopted).
                self.to_start[task.id] = (task, old_ids)

        await self.store.update(replace)
        if not created:
            return
        new_id = created[0].id
        self.created[new_id] = 0.0
        if start_first:
            if await self._wait_running(new_id):
                await self.store.update(lambda tx: self._shutdown_slot_except(tx, key, new_id))
        else:
            await self._wait_stopped(old_ids)
            try:
                await self.store.update(lambda tx: start_now(tx, new_id))
            except StoreUnavailable as exc:
                # Refused (a busy leader): the restart supervisor retries until it commits.
                log.warning("could not start task %s of the update, handed over: %s", new_id, exc)
                handed = self.to_start.pop(new_id, None)
                if handed is not None and self.orphaned is not None:
                    self.orphaned(*handed)
            self.to_start.pop(new_id, None)
            await self._wait_running(new_id)

    @staticmethod
    def _shutdown(tx: Tx, task: pb.Task) -> None:
        if task.desired_state < states.SHUTDOWN:
            task = copy(task)
            task.desired_state = states.SHUTDOWN
            tx.update(task)

    def _shutdown_slot_except(self, tx: Tx, key: SlotKey, keep_id: str) -> None:
        for task in tx.view.service_tasks(self.service_id):
            if slot_key(task) == key and task.id != keep_id and task.desired_state <= states.RUNNING:
                self._shutdown(tx, task)

    async def _wait_stopped(self, task_ids: list[str]) -> None:
        """Until the old tasks stopped, their node is down, or one minute passed."""
        deadline = time.monotonic() + OLD_TASK_TIMEOUT
        with self.store.watch(["task", "node"]) as watch:
            while time.monotonic() < deadline and not self._stop.is_set():
                if all(old_task_gone(self.store.view, task_id) for task_id in task_ids):
                    return
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await watch.get()
                except TimeoutError:
                    return

    async def _wait_running(self, task_id: str) -> bool:
        """Until the new task runs (True) or ends without running (False)."""
        with self.store.watch(["task"]) as watch:
            while not self._stop.is_set():
                task = self.store.view.tasks.get(task_id)
                if task is None or task.desired_state > states.RUNNING:
                    return False
                if states.is_terminal(task.status.state):
                    # Counted here, before this worker takes another slot, so that a failing
                    # update stops after the failure rather than one slot later.
                    await self._failed(task)
                    return False
                if task.status.state == states.RUNNING:
                    return True
                stop = asyncio.create_task(self._stop.wait())
                get = asyncio.create_task(watch.get())
                await asyncio.wait({stop, get}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                get.cancel()
            return False

    # ------------------------------------------------------------------ failures

    async def _watch_failures(self) -> None:
        """Count this update's tasks that end before running, or within ``monitor`` of it."""
        with self.store.watch(["task"]) as watch:
            while True:
                event = await watch.get()
                task = event.obj
                if event.action == DELETE or task.id not in self.created:
                    continue
                if task.status.state == states.RUNNING and not self.created[task.id]:
                    self.created[task.id] = time.monotonic()
                    continue
                if states.is_terminal(task.status.state) and await self._failed(task):
                    return

    async def _failed(self, task: pb.Task) -> bool:
        """Count a task of this update that ended; True when the update stopped because of it."""
        if task.id in self._counted or task.status.state == states.SHUTDOWN:
            return False  # counted already, or stopped on purpose (a newer update, a scale-down)
        self._counted.add(task.id)
        started = self.created.get(task.id, 0.0)
        if started and time.monotonic() - started > self.config.monitor:
            return False  # it proved itself; later exits are the restart policy's business
        self.failures += 1
        if self.config.failure_action == pb.UpdateConfig.CONTINUE:
            return False
        if self.failures / max(1, len(self.dirty)) > self.config.max_failure_ratio:
            await self._on_too_many_failures(task)
            return True
        return False

    async def _on_too_many_failures(self, task: pb.Task) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        what = f"task {task.id}"
        if self.rolling_back:
            await self._set_status(
                US.ROLLBACK_PAUSED, f"rollback paused due to failure or early termination of {what}"
            )
            return
        if self.config.failure_action == pb.UpdateConfig.ROLLBACK:

            def rollback(tx: Tx) -> None:
                service = tx.service(self.service_id)
                if (
                    service is None
                    or service.spec_version != self.spec_version
                    or not service.HasField("previous_spec")
                ):
                    return
                service = copy(service)
                service.spec.CopyFrom(service.previous_spec)
                service.ClearField("previous_spec")
                service.spec_version += 1
                service.update_status.state = US.ROLLBACK_STARTED
                service.update_status.message = (
                    f"update rolled back due to failure or early termination of {what}"
                )
                service.update_status.started_at = time.time()
                tx.update(service)

            await self.store.update(rollback)
            return
        await self._set_status(US.PAUSED, f"update paused due to failure or early termination of {what}")


class UpdateSupervisor:
    """One updater per service; a newer spec version replaces a running update."""

    def __init__(self, store: ObjectStore, live: LiveSlots | None = None) -> None:
        self.store = store
        #: The orchestrator's live-slot index: "nothing to update" without a pass over tasks.
        self.live = live
        self.updaters: dict[str, Updater] = {}
        #: Where an updater's READY tasks go when it will not start them (the restart supervisor).
        self.orphaned: Orphaned | None = None

    def owns(self, task_id: str) -> bool:
        """Whether a running update will start this READY task itself."""
        return any(task_id in updater.to_start for updater in self.updaters.values())

    def dirty_slots(self, service: pb.Service) -> dict[SlotKey, list[pb.Task]]:
        live = self.live
        if live is not None and live.ready and live.all_current(service.id, service.spec_version):
            return {}
        tasks = self.store.view.service_tasks(service.id)
        if _all_current(tasks, service.spec_version):
            return {}
        slots: dict[SlotKey, list[pb.Task]] = {}
        for task in tasks:
            if task.desired_state <= states.RUNNING:
                slots.setdefault(slot_key(task), []).append(task)
        return {
            key: tasks
            for key, tasks in slots.items()
            if len(tasks) > 1 or any(is_dirty(t, service) for t in tasks)
        }

    async def update(self, service: pb.Service) -> None:
        """Start (or keep) the update this service's current spec needs."""
        running = self.updaters.get(service.id)
        if running is not None and running.task is not None and not running.task.done():
            if running.spec_version == service.spec_version:
                return
            await running.cancel()
        if service.update_status.state in (US.PAUSED, US.ROLLBACK_PAUSED):
            return
        dirty = self.dirty_slots(service)
        if not dirty:
            if service.update_status.state in (US.UPDATING, US.ROLLBACK_STARTED) and (
                running is None
                or running.spec_version != service.spec_version
                or running.task is None
                or running.task.done()
            ):
                done = (
                    US.ROLLBACK_COMPLETED
                    if service.update_status.state == US.ROLLBACK_STARTED
                    else US.COMPLETED
                )
                message = "rollback completed" if done == US.ROLLBACK_COMPLETED else "update completed"
                updater = Updater(self.store, service, {})
                await updater._set_status(done, message)
            return
        updater = Updater(self.store, service, dirty, self.orphaned)
        self.updaters[service.id] = updater
        updater.start()

    async def stop(self) -> None:
        for updater in self.updaters.values():
            await updater.cancel()
        self.updaters.clear()

    async def forget(self, service_id: str) -> None:
        updater = self.updaters.pop(service_id, None)
        if updater is not None:
            await updater.cancel()
