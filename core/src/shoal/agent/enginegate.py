"""A bound on how many operations one node asks of its container engine at once.

Without it a service of 10,000 replicas placed on one node becomes 10,000 concurrent engine
calls: as many threads in the daemon and connections to the engine, which ran dockerd out of
file descriptors (it then refused every client on the host) and starved the agent's own
heartbeats. The kernel applies the bound here, around whatever runtime plugin the node uses,
so every runtime gets it without doing anything.

What is bounded: the operations that make the engine work (``prepare``, ``start``,
``shutdown``, ``remove``, ``list_containers``, ``find``). ``wait`` and ``logs`` are not: they
are long waits on containers that already exist, one per running task or per reader, and
would otherwise hold a slot for as long as a container runs. Nor is ``describe``: the agent
calls it once per session it opens, and a session must not queue behind thousands of
creates, or the node would miss its heartbeats and be marked Down for being busy.

Two rules keep the engine's view and ours the same:

- An operation the engine has started is never abandoned. A caller cancelled while its call
  is in flight (the task was removed meanwhile) waits for the call to end before it unwinds,
  and the call keeps its slot till then, so the bound counts the work the engine really has.
  A caller cancelled while still queued for a slot is simply dropped: nothing was started.
- ``remove`` first waits for every call still in flight for that task, so a container whose
  creation was under way when its task was removed is created first and then removed, never
  left behind.

Slots go to the work that finishes tasks first: a ``start`` (its container exists already)
before anything else, a ``prepare`` (a new container) last, first come first served within
each. With one queue for all, a service of 50 replicas on a 16-wide gate had all 50 creates
made before its first start: no task ran until every container existed. Served this way, a
task is started as soon as it is created, as the engine's floor in ``bench/bench_e2e.py`` does
it (each of its workers creates a container, then starts it), and the first tasks run while
later ones are still being created.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from shoal.agent.enginelimits import (
    DEFAULT_MAX_CONCURRENT_ENGINE_CALLS as DEFAULT_MAX_CONCURRENT_ENGINE_CALLS,
)
from shoal.proto import objects_pb2 as pb
from shoal.roles.runtime import (
    ContainerRef,
    EngineInfo,
    ExitStatus,
    LogLine,
    RegistryAuth,
    RuntimeProvider,
    TaskFile,
    declared_engine_concurrency,
)

T = TypeVar("T")


@runtime_checkable
class TaskLookup(Protocol):
    """Optional runtime capability: find one task's container by its labels in one call.

    Runtimes without it are asked through ``list_containers`` instead, which lists every
    container of the node.
    """

    async def find(self, task: pb.Task) -> ContainerRef | None:
        """The task's container as the engine has it, or None when there is none."""


async def find_container(runtime: RuntimeProvider, task: pb.Task) -> ContainerRef | None:
    """The task's container on the engine, found by its labels, or None."""
    if isinstance(runtime, TaskLookup):
        return await runtime.find(task)
    listed = await runtime.list_containers(task.node_id)
    return next((ref for ref in listed if ref.task_id == task.id), None)


#: Who gets a free slot first (lower first): see the module's docstring.
FINISH = 0
OTHER = 1
BEGIN = 2


class PrioritySlots:
    """``limit`` slots, handed to the waiter of the lowest priority first, then in order of
    arrival. A waiter cancelled while queued takes none; one cancelled as it was handed a
    slot hands it on.

    A freed slot is handed on at the next turn of the event loop, not at once: the caller that
    freed it (a create that just ended) goes on to ask for its next operation (the start) in
    the same turn, and that request must be in the queue when the slot is given out.
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._handing_on = False

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._queue:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._arrivals), granted))
        self._hand_on_soon()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        self._free += 1
        self._hand_on_soon()

    def _hand_on_soon(self) -> None:
        if self._free > 0 and self._queue and not self._handing_on:
            self._handing_on = True
            asyncio.get_running_loop().call_soon(self._hand_on)

    def _hand_on(self) -> None:
        self._handing_on = False
        while self._free > 0 and self._queue:
            _, _, granted = heapq.heappop(self._queue)
            if not granted.done():  # a cancelled waiter left its future behind: skip it
                granted.set_result(None)
                self._free -= 1


def engine_call_limit(runtime_class: type, override: int | None = None) -> int:
    """How wide the gate around a runtime of ``runtime_class`` is: the operator's ``override``
    (``--max-concurrent-engine-calls``), else what the class declares (``engine_concurrency``:
    engines differ in how much parallel work pays), else the kernel's default."""
    if override is not None:
        return override
    return declared_engine_concurrency(runtime_class) or DEFAULT_MAX_CONCURRENT_ENGINE_CALLS


class BoundedRuntime:
    """The node's runtime, with at most ``limit`` engine operations in flight at once (``None``:
    as many as the runtime declares, else the default; see ``engine_call_limit``)."""

    role: ClassVar[str] = "runtime"
    api_version: ClassVar[int] = 1

    def __init__(self, inner: RuntimeProvider, limit: int | None = None) -> None:
        limit = engine_call_limit(type(inner), limit)
        if limit < 1:
            raise ValueError(f"the engine call limit must be at least 1, got {limit}")
        self.inner = inner
        self.limit = limit
        self._slots = PrioritySlots(limit)
        self._in_flight: dict[str, set[asyncio.Task[None]]] = {}
        #: Operations running now, and the most ever seen at once (for tests and diagnosis).
        self.active = 0
        self.peak = 0

    # ------------------------------------------------------------------ plumbing

    async def _bounded(self, task_id: str, operation: Callable[[], Awaitable[T]], priority: int = OTHER) -> T:
        """Run ``operation`` in a task of its own once a slot is free, and answer with what it
        returned or raised. The caller waits on a future of its own that the operation's task
        settles as it ends, not on that task: a caller cancelled meanwhile cancels only its
        wait (``asyncio.shield`` does the same with a second future and two more callbacks,
        each a turn of the loop: a third of the gate's cost per call at 100,000 tasks)."""
        await self._slots.acquire(priority)  # a caller cancelled while queued here started nothing
        try:
            loop = asyncio.get_running_loop()
            answer: asyncio.Future[T] = loop.create_future()
            call = loop.create_task(self._call(task_id, operation, answer))
            if task_id:
                self._in_flight.setdefault(task_id, set()).add(call)
            try:
                return await answer
            except asyncio.CancelledError:
                # The engine is working on it: let it finish (holding the slot) before unwinding,
                # so that whatever it creates exists when the caller goes on to remove it.
                if not call.done():
                    await asyncio.wait({call})
                raise
        finally:
            self._slots.release()

    async def _call(
        self, task_id: str, operation: Callable[[], Awaitable[T]], answer: asyncio.Future[T]
    ) -> None:
        """The engine operation itself, counted while it runs; its outcome goes to ``answer``
        (unless its caller stopped waiting) and it leaves ``_in_flight`` as it ends."""
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            result = await operation()
        except Exception as exc:
            if not answer.done():
                answer.set_exception(exc)
        except BaseException:  # this task itself was cancelled (the loop is closing), or worse
            answer.cancel()
            raise
        else:
            if not answer.done():
                answer.set_result(result)
        finally:
            self.active -= 1
            if task_id:
                self._untrack(task_id)

    def _untrack(self, task_id: str) -> None:
        calls = self._in_flight.get(task_id)
        if calls is not None:
            calls.discard(asyncio.current_task())
            if not calls:
                del self._in_flight[task_id]

    async def settled(self, task_id: str) -> None:
        """Return once no engine call for ``task_id`` is in flight (whatever their outcome)."""
        while calls := self._in_flight.get(task_id):
            await asyncio.wait(set(calls))

    # ------------------------------------------------------------------ role API

    async def describe(self) -> EngineInfo:
        return await self.inner.describe()

    async def prepare(
        self, task: pb.Task, files: Sequence[TaskFile] = (), *, registry_auth: RegistryAuth | None = None
    ) -> None:
        if registry_auth is None:  # a runtime plugin need not know the keyword until it is used
            await self._bounded(task.id, lambda: self.inner.prepare(task, files), BEGIN)
        else:
            await self._bounded(
                task.id, lambda: self.inner.prepare(task, files, registry_auth=registry_auth), BEGIN
            )

    async def start(self, task: pb.Task) -> ContainerRef:
        return await self._bounded(task.id, lambda: self.inner.start(task), FINISH)

    def wait(self, task: pb.Task) -> Coroutine[Any, Any, ExitStatus]:
        """The runtime's own wait, unbounded (see the module's docstring) and not wrapped: it
        lasts as long as the container runs, one per running task."""
        return self.inner.wait(task)

    async def shutdown(self, task: pb.Task, grace_seconds: float) -> None:
        await self._bounded(task.id, lambda: self.inner.shutdown(task, grace_seconds))

    async def remove(self, task: pb.Task) -> None:
        await self.settled(task.id)
        await self._bounded(task.id, lambda: self.inner.remove(task))

    async def list_containers(self, node_id: str) -> list[ContainerRef]:
        return await self._bounded("", lambda: self.inner.list_containers(node_id))

    async def find(self, task: pb.Task) -> ContainerRef | None:
        """The task's container if the engine has one (after a call whose outcome is unknown)."""
        return await self._bounded(task.id, lambda: find_container(self.inner, task))

    def logs(self, task: pb.Task, *, follow: bool, tail: int | None) -> AsyncIterator[LogLine]:
        return self.inner.logs(task, follow=follow, tail=tail)

    async def close(self) -> None:
        await self.inner.close()
