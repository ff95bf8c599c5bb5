"""One task's state machine on the agent.

The agent, not the runtime, decides states (SwarmKit's agent/exec rules): it steps a task
ACCEPTED -> PREPARING -> READY -> STARTING -> RUNNING -> COMPLETE/FAILED, never past the
desired state; when the manager asks for SHUTDOWN (or REMOVE) it stops the container and
reports SHUTDOWN. Runtime errors are temporary (retried with backoff) or fatal: REJECTED
before STARTING, FAILED after.

A create or start that failed temporarily (the engine did not answer in time, or could not
be reached) may still have happened, or still be happening inside the engine. Such a call is
never simply repeated: the controller first looks the task's container up by its labels and
adopts what it finds (a created container is READY, a started one RUNNING), and repeats the
call only for what is missing. Repeating blindly is what turned an overloaded engine into a
dead one: every timeout added one more create for the engine to work through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from shoal import states
from shoal.agent.enginegate import find_container
from shoal.agent.networking import NodeNetworking
from shoal.proto import objects_pb2 as pb
from shoal.roles.network import NetworkError
from shoal.roles.runtime import (
    DEFAULT_STOP_GRACE_SECONDS,
    ContainerRef,
    ExitStatus,
    RegistryAuth,
    RuntimeError_,
    RuntimeProvider,
    TaskFile,
)

log = logging.getLogger("shoal.agent")

Reporter = Callable[[pb.Task, pb.TaskStatus], None]

RETRY_MIN = 0.2
RETRY_MAX = 8.0
#: Seconds a cancelled runtime wait may take to end before the task is stopped regardless: a
#: runtime whose wait ignores its cancellation must not keep the task from ever stopping.
CANCELLED_WAIT_LIMIT = 10.0


def grace_seconds(task: pb.Task) -> float:
    """The spec's stop grace period; the control API always fills it (Swarm's default is 10s)."""
    grace = task.spec.container.stop_grace_period
    return DEFAULT_STOP_GRACE_SECONDS if grace < 0 else grace


def _retrieved(waiter: asyncio.Task[ExitStatus]) -> None:
    """Mark a late wait's outcome as seen (asyncio logs an exception nobody retrieved)."""
    if not waiter.cancelled():
        waiter.exception()


class TaskController:
    """Drives one task through the runtime; ``update`` feeds it the latest assignment."""

    def __init__(
        self,
        task: pb.Task,
        status: pb.TaskStatus | None,
        runtime: RuntimeProvider,
        report: Reporter,
        files: Callable[[pb.Task], Sequence[TaskFile]] = lambda task: (),
        registry_auth: Callable[[pb.Task], RegistryAuth | None] = lambda task: None,
        networks: NodeNetworking | None = None,
    ) -> None:
        self.task = task
        #: The node's networking: the task's endpoints are attached before it is RUNNING.
        self.networks = networks or NodeNetworking(None)
        #: Whether this process attached the task's endpoints (a re-adopted task is attached
        #: again, harmlessly: attach is idempotent).
        self._attached = False
        #: The task's secrets and configs with their values (the agent's memory, never disk).
        self.files = files
        #: The credentials to pull the task's image with (``--with-registry-auth``), in memory.
        self.registry_auth = registry_auth
        self.status = pb.TaskStatus()
        self.status.CopyFrom(status if status is not None else task.status)
        self.runtime = runtime
        self._report = report
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        #: The status was taken as passing and not reported yet (see ``_set``).
        self._unreported = False
        #: Set when a create or start failed temporarily: it may have happened all the same.
        self._outcome_unknown = False

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"task-{self.task.id}")

    def update(self, task: pb.Task) -> None:
        self.task = task
        self._changed.set()

    async def remove(self) -> None:
        """Stop driving the task, stop its container and remove it."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        with contextlib.suppress(RuntimeError_):
            if not states.is_terminal(self.status.state) and self.status.state >= states.PREPARING:
                await self.runtime.shutdown(self.task, grace_seconds(self.task))
            await self.runtime.remove(self.task)
        await self.networks.detach(self.task)

    async def close(self) -> None:
        """Stop driving the task but leave its container as it is (daemon shutdown)."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    # ------------------------------------------------------------------ state machine

    def _set(
        self, state: int, message: str, err: str = "", exit_code: int | None = None, *, passing: bool = False
    ) -> None:
        """Take ``state`` and report it. ``passing``: the next step leaves it at once, before
        anything is awaited (ACCEPTED, then PREPARING; READY, then STARTING): it is reported
        only if the controller stops at it after all (``_report_unreported``, before every
        wait). The agent queues only the latest status of a task and writes only the latest
        to its DB, so such a state was never sent nor written, and reporting it cost two of
        the five reports of every task."""
        status = pb.TaskStatus()
        status.CopyFrom(self.status)
        status.state = state  # type: ignore[assignment]
        status.message = message
        status.err = err
        status.timestamp = time.time()
        if exit_code is not None:
            status.container.exit_code = exit_code
        self.status = status
        self._unreported = passing
        if not passing:
            self._report(self.task, status)

    def _report_unreported(self) -> None:
        """Report the state taken last if it was taken as ``passing`` and is still the state:
        the controller is about to wait with it."""
        if self._unreported:
            self._unreported = False
            self._report(self.task, self.status)

    def _exited(self, _: object) -> None:
        self._changed.set()

    async def _wait_change(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    async def _run(self) -> None:
        backoff = RETRY_MIN
        while True:
            try:
                progressed = await self._step()
                backoff = RETRY_MIN
                if not progressed:
                    self._report_unreported()
                    await self._wait_change()
            except asyncio.CancelledError:
                raise
            except RuntimeError_ as exc:
                if exc.temporary:
                    self._outcome_unknown = self.status.state in (states.PREPARING, states.STARTING)
                    log.warning("task %s: %s (retrying in %.1fs)", self.task.id, exc, backoff)
                    self._report_unreported()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
                self._fail(str(exc))
            except NetworkError as exc:  # the task cannot have its networks: it fails
                self.networks.task_stopped(self.task)
                self._fail(f"network: {exc}")
            except Exception as exc:  # an unexpected bug must not kill the agent
                log.exception("task %s: unexpected error", self.task.id)
                self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, err: str) -> None:
        if self.status.state < states.STARTING:
            self._set(states.REJECTED, "rejected", err)
        else:
            self._set(states.FAILED, "failed", err)

    async def _step(self) -> bool:
        """Take one step towards the desired state; False when there is nothing to do now."""
        desired = self.task.desired_state
        state = self.status.state
        if desired >= states.SHUTDOWN:
            if states.is_terminal(state):
                return False
            if state >= states.PREPARING:
                self._report_unreported()  # READY, told before the stop is awaited
                self.networks.task_stopped(self.task)  # out of the mesh before it stops
                await self.runtime.shutdown(self.task, grace_seconds(self.task))
            self._set(states.SHUTDOWN, "shutdown")
            return True
        if states.is_terminal(state) or state > desired:
            return False
        if state < states.ACCEPTED:
            self._set(states.ACCEPTED, "accepted", passing=True)
        elif state == states.ACCEPTED:
            self._set(states.PREPARING, "preparing")
        elif state == states.PREPARING:
            if await self._lookup() is None:
                auth = self.registry_auth(self.task)
                if auth is None:
                    await self.runtime.prepare(self.task, self.files(self.task))
                else:
                    await self.runtime.prepare(self.task, self.files(self.task), registry_auth=auth)
            self._set(states.READY, "prepared", passing=True)
        elif state == states.READY:
            if desired < states.RUNNING:
                return False
            self._set(states.STARTING, "starting")
        elif state == states.STARTING:
            found = await self._lookup()
            started = found is not None and (found.running or found.exit_code is not None)
            ref = found if started and found is not None else await self.runtime.start(self.task)
            self.status.container.container_id = ref.container_id
            self.status.container.pid = ref.pid
            await self._attach(ref.pid)
            self._set(states.RUNNING, "started")
        elif state == states.RUNNING:
            if not self._attached:  # re-adopted after a restart: make sure, idempotently
                await self._attach(self.status.container.pid)
            await self._wait_running()
        return True

    async def _attach(self, pid: int) -> None:
        await self.networks.attach(self.task, pid)
        self._attached = True

    async def _let_wait_end(self, waiter: asyncio.Task[ExitStatus]) -> None:
        """Give the cancelled runtime wait ``CANCELLED_WAIT_LIMIT`` seconds to end: the task
        is then stopped all the same (a wait deaf to its cancellation hung the task at RUNNING,
        its container never stopped), and the wait ends whenever it does."""
        waiter.add_done_callback(_retrieved)  # as gather(return_exceptions=True) did
        done, _ = await asyncio.wait({waiter}, timeout=CANCELLED_WAIT_LIMIT)
        if not done:
            runtime = getattr(self.runtime, "inner", self.runtime)  # BoundedRuntime wraps it
            log.warning(
                "task %s: runtime %s's wait did not end %gs after its cancellation; stopping the "
                "container regardless",
                self.task.id,
                type(runtime).__name__,
                CANCELLED_WAIT_LIMIT,
            )

    async def _lookup(self) -> ContainerRef | None:
        """After a create or start whose outcome is unknown: the task's container, if the
        engine has it (found by its labels). None when the last call's outcome is known."""
        if not self._outcome_unknown:
            return None
        found = await find_container(self.runtime, self.task)
        self._outcome_unknown = False
        if found is not None:
            log.info(
                "task %s: adopting container %s of an unanswered call", self.task.id, found.container_id[:12]
            )
        return found

    async def _wait_running(self) -> None:
        """Wait for the container to exit, or for the manager to ask it to stop. The exit
        wakes the controller as an update does (one task per running task, not a second one
        racing it for every update)."""
        waiter = asyncio.create_task(self.runtime.wait(self.task))
        waiter.add_done_callback(self._exited)
        try:
            while not waiter.done():
                await self._wait_change()
                if not waiter.done() and self.task.desired_state >= states.SHUTDOWN:
                    return  # the next step shuts it down and reports SHUTDOWN
            exit_status = waiter.result()
            self.networks.task_stopped(self.task)  # out of the mesh now, not when managers know
        finally:
            if not waiter.done():
                waiter.cancel()
                await self._let_wait_end(waiter)
        if self.task.desired_state >= states.SHUTDOWN:
            self._set(states.SHUTDOWN, "shutdown", exit_code=exit_status.exit_code)
        elif exit_status.exit_code == 0 and not exit_status.error:
            self._set(states.COMPLETE, "finished", exit_code=0)
        else:
            err = exit_status.error or f"task: non-zero exit ({exit_status.exit_code})"
            self._set(states.FAILED, "failed", err, exit_code=exit_status.exit_code)
