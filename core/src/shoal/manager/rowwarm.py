"""``service ps`` rows built before they are asked for, while the leader has nothing else to do.

A first ``service ps`` of 100,000 tasks waited for the leader to build every row (~0.6 s of
protobuf reads, issue 18 item 2); a repeat reads the rows a listing kept (``tasklist.RowCache``)
and costs what encoding them does. The ``RowWarmer`` builds and keeps the rows of tasks whose
row is missing or stale once the store has been quiet for a while, so that a first listing
after the cluster settles costs what a repeat does. It never competes with a burst of writes:
it starts only when at most ``QUIET_ENTRIES`` entries were applied in the last ``QUIET`` seconds,
and checks that again before each piece of ``PIECE`` tasks, stopping its pass as soon as
writes come back (the rows built so far stay good: each is kept with its task's version). A
listing during churn builds the rows of changed tasks itself, as it did without the warmer.
After its first pass it looks only at the tasks written since (``RowWarmer.applied``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from shoal.manager import tasklist
from shoal.store.memory import DELETE, Event, ObjectStore

#: Seconds without more than ``QUIET_ENTRIES`` applied entries before rows are built.
QUIET = 2.0
#: Entries the store may apply in ``QUIET`` seconds and still count as quiet (a node's status
#: now and then must not keep the rows cold forever; a create applies hundreds a second).
QUIET_ENTRIES = 4
#: How often the store's applied index is looked at while waiting for quiet.
POLL = 0.5
#: Tasks looked at per step of a pass: building 500 rows is ~8 ms on a quiet core.
PIECE = 500
#: Tasks written since the last pass beyond which the next one goes over every task, in the
#: order listings read them (after a create, all of its tasks).
FULL_AFTER = 10_000


class _Pace:
    """The store's applied index over the last ``span`` seconds: whether it was quiet."""

    def __init__(self, store: ObjectStore, span: float, entries: int, clock: Callable[[], float]) -> None:
        self._store = store
        self._span = span
        self._entries = entries
        self._clock = clock
        #: (when, applied index) looks, oldest first, the first one at least ``span`` old.
        self._looks: deque[tuple[float, int]] = deque([(clock(), store.applied_index)])

    def quiet(self) -> bool:
        """Look at the index now; quiet when the last ``span`` seconds applied at most
        ``entries`` (and they have been watched that long)."""
        now = self._clock()
        looks = self._looks
        looks.append((now, self._store.applied_index))
        while len(looks) > 2 and looks[1][0] <= now - self._span:
            looks.popleft()
        first_at, first_index = looks[0]
        return first_at <= now - self._span and looks[-1][1] - first_index <= self._entries


class RowWarmer:
    """Keeps ``cache`` holding a row for every task of the store, built in quiet times (see
    the module docstring). A leader component: ``start`` when leading, ``stop`` on stepping
    down (the rows stay with the cache).

    It hears of every applied change (``ApplyListener``: a task's ID put in a set, a node's
    hostname compared), so that after its first pass it visits only the tasks written since:
    a pass over 100,000 tasks whose rows were all current cost 0.4 s of CPU, and a store
    written now and then (within ``QUIET_ENTRIES``) would have paid that at every write. A
    pass over every task comes first, after a snapshot is installed, when a node's hostname
    changes (rows hold it) or when more than ``FULL_AFTER`` tasks changed (then in the order
    listings read, by service and slot)."""

    def __init__(
        self,
        store: ObjectStore,
        cache: tasklist.RowCache,
        *,
        quiet: float = QUIET,
        entries: int = QUIET_ENTRIES,
        poll: float = POLL,
        piece: int = PIECE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache = cache
        self._quiet = quiet
        self._entries = entries
        self._poll = poll
        self._piece = piece
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], None] | None = None
        #: Every task needs looking at (first, or since a snapshot or a node's new hostname).
        self._full = True
        #: IDs of the tasks written since they were last looked at.
        self._changed: set[str] = set()
        #: Completed passes (for tests and diagnostics).
        self.passes = 0

    def start(self) -> None:
        self._full = True
        self._stop_listening = self.store.listen(self)
        self._task = asyncio.create_task(self._run(), name="row-warmer")

    async def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ------------------------------------------------------------------ ApplyListener

    def applied(self, events: list[Event]) -> None:
        """(On every apply: a set add per task change, ~1 us, and nothing at all once a pass
        over every task is due: a burst of writes pays for at most ``FULL_AFTER`` of them.)"""
        if self._full:
            return
        changed = self._changed
        for event in events:
            kind = event.kind
            if kind == "task":
                if event.action != DELETE:
                    changed.add(event.obj.id)
            elif kind == "node" and event.old is not None:  # (a new node has no task yet)
                if event.action == DELETE or event.old.description.hostname != event.obj.description.hostname:
                    self._full = True
        if len(changed) > FULL_AFTER:
            self._full = True
        if self._full:
            self._changed = set()

    def restored(self) -> None:
        self._full = True

    # ------------------------------------------------------------------ passes

    async def _run(self) -> None:
        pace = _Pace(self.store, self._quiet, self._entries, self._clock)
        while True:
            await asyncio.sleep(self._poll)
            if not (self._full or self._changed) or not pace.quiet():
                continue
            if self._full:
                self._full = False
                self._changed = set()
                done = await self._pass(pace)
                self._full = self._full or not done
            else:
                done = await self._changed_pass(pace)
            if done:
                self.passes += 1

    async def _pass(self, pace: _Pace) -> bool:
        """One pass over every service's tasks by slot (the order a listing reads the kept
        rows in: kept in it, they are read in memory order), a piece per loop step; whether
        it got to the end without writes coming back."""
        view = self.store.view
        self.cache.prune(view)
        names = tasklist.Names(view)
        for service_id in list(view.tasks_by_service):
            tasks = tasklist.in_slot_order(view.service_tasks(service_id))
            for start in range(0, len(tasks), self._piece):
                await asyncio.sleep(0)
                if not pace.quiet() or self.store.view is not view:
                    return False
                tasklist.warm(tasks[start : start + self._piece], names, self.cache)
        return True

    async def _changed_pass(self, pace: _Pace) -> bool:
        """The tasks written since they were last looked at, a piece per loop step; those not
        reached when writes come back are looked at next time."""
        pending = list(self._changed)
        self._changed = set()
        view = self.store.view
        names = tasklist.Names(view)
        items = view.tasks.items
        for start in range(0, len(pending), self._piece):
            await asyncio.sleep(0)
            if not pace.quiet() or self.store.view is not view:
                self._changed.update(pending[start:])
                return False
            found = [items[key] for key in pending[start : start + self._piece] if key in items]
            tasklist.warm(found, names, self.cache)
        return True
