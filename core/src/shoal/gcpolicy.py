"""Python's cyclic garbage collector in a process that holds a large store.

A manager keeps every task, node and service as protobuf messages, and the collector tracks
each of them. Python runs a full collection (every tracked object walked, the event loop
held meanwhile) whenever the objects promoted to the oldest generation since the last one
reach a quarter of it, and churn counts: each status update replaces a task with a copy
that lives a few loop turns, long enough to be promoted. At 10,000 tasks on 1,000 hollow
nodes a manager ran 2-4 full collections every 10 s, each 0.2-0.5 s of a held loop (Raft
heartbeats, dispatcher heartbeats and status reports all waiting behind it).

``CollectorPolicy`` moves the long-lived objects out of the collector's sight
(``gc.freeze``): every ``period`` it collects the young generations (cheap) and freezes what
survived, so a full collection walks only what was allocated since, not the whole store.
Frozen objects are still freed by reference counting as usual; only a reference cycle among
them would wait, so when the frozen set has doubled since the last full pass the policy
unfreezes everything once and lets one full collection reclaim such cycles (an amortised
pass, like a growing array's copy, instead of one every 25% of churn).

While it runs, the policy is the only one to start a full collection: Python's own (its
oldest generation's threshold, ``gc.set_threshold``) is set out of reach. At 30,000 tasks on
300 hollow nodes Python still started 3-6 full collections per 10 s on the leader, each over
everything allocated since the last freeze, 0.1-1.1 s of a held loop each and nothing freed
(``0 collected``): when the loop is held for seconds, no freeze runs and the objects since the
last one pile up, and each automatic pass walked the pile again. Each step now collects that
pile itself (``gc.collect(2)`` walks only the objects not frozen: what was allocated since the
previous step) before freezing what survived. And the thaw, the one pass over every live
object, waits for a quiet loop (``QUIET_STEPS`` steps on time in a row): a leader starting
100,000 tasks is busy for a minute, and a pass over its whole heap then is seconds of Raft
heartbeats not sent. A pass that finds next to no frozen cycles (a store that only grew)
makes the next wait for twice the growth (``growth``), up to ``MAX_GROWTH``.

A busy loop gets the pass only when it cannot cost a Raft election. Either its expected pause
fits ``PAUSE_BUDGET``, well under the election timeout (1-2 s): the frozen objects times the
CPU per object the last pass took (``DEFAULT_CPU_PER_OBJECT`` before the first), times how much
the loop's thread is stretched by the machine's load now (its CPU plus run-queue wait, over its
CPU: a pass of 0.4 s of CPU held the loop 1-1.8 s at load 2-9); or the pass is overdue. A quiet
loop's pass, too, waits until that expected pause fits ``QUIET_PAUSE_BUDGET`` (a leader held
over a second, quiet or not, lets the followers elect), and a loop whose thread waits for a CPU
is busy, not quiet, whatever CPU it got. Overdue: put off for ``OVERDUE_AFTER`` (far longer
than a 100,000-task create or removal, about a minute each) with the frozen set
``OVERDUE_FACTOR`` times the size that called for it, or grown to ``OVERDUE_FACTOR`` squared
times that size whatever the time. A loop that is never quiet thus still has its frozen cycles
reclaimed, and the heap stays bounded. Before, the factor alone made it overdue, and a fresh
leader's first 100,000-task create crossed it (its heap grew from the start-up set to 807,000
objects): a pass of 0.5-1.8 s of held loop in the middle of the create, and elections. The
members of a cluster hold the same store and reach the same sizes together, and turn quiet
together when a create ends: each pass waits a random extra (up to ``QUIET_JITTER_STEPS`` quiet
steps, up to half ``OVERDUE_AFTER`` again) so that two followers do not hold their loops at
once (two followers held a second together make the leader step down).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import sys
import time
from collections.abc import Callable

log = logging.getLogger("shoal.gcpolicy")

#: How often the survivors are frozen: short enough that little piles up between two
#: freezes, long enough that the young collection before each costs nothing to speak of.
FREEZE_PERIOD = 2.0
#: No full pass before the frozen set holds this many objects (a small store never thaws).
MIN_THAW_SIZE = 200_000
#: ``min_thaw_size`` for a process that never takes a full pass over its frozen objects.
NEVER_THAW = sys.maxsize
#: The oldest generation's threshold while a policy runs: never reached (2**31 - 1 fits the
#: C int ``gc.set_threshold`` takes), so Python starts no full collection of its own.
NO_AUTOMATIC_FULL_COLLECTION = 2**31 - 1
#: A step that ran this much later than asked found the loop busy (held by other work).
BUSY_LATENESS = 0.1
#: A step whose period the process spent this share of a core or more on found it busy.
#: Lateness alone does not show it: creating 100,000 tasks the leader's loop ran each step
#: on time while it worked most of every second, and a pass over 833,000 objects then held
#: it 1.2 s.
BUSY_CPU_SHARE = 0.5
#: The loop thread's scheduler figures (Linux): its nanoseconds on a CPU and waiting for one.
SCHEDSTAT = "/proc/thread-self/schedstat"
#: The loop thread's CPU (seconds) in a period below which its run-queue wait says too little
#: of the machine's load to scale a pass's expected pause by.
MIN_STRETCH_SAMPLE = 0.01
#: Steps on time and not busy in a row before the thaw's pass over every live object may run.
QUIET_STEPS = 3
#: The longest expected pause of a pass on a busy loop: well under Raft's election timeout (10-20
#: ticks of 100 ms), with room for a loaded machine (a pass of 0.4 s of CPU took 1-1.8 s of wall
#: time at load 2-9).
PAUSE_BUDGET = 0.2
#: The longest expected pause of a pass on a quiet loop: a leader's loop held over a second lets
#: the followers elect, quiet or not. At 100,000 tasks the leader's pass is 0.43 s of CPU: on a
#: machine that stretches the loop's CPU less than 1.4 times; on a busier one it waits (a
#: quiet pass of 0.15 s of CPU took 0.46 s of wall time at load 5.5).
QUIET_PAUSE_BUDGET = 0.6
#: The pass's CPU seconds per frozen object before one was measured: a little more than a
#: leader's (at 100,000 tasks its pass over 807,000 objects took 424 ms of CPU, 0.53 us each;
#: 0.26 us in process over a store of protobuf tasks), so that a first pass is expected long
#: rather than short.
DEFAULT_CPU_PER_OBJECT = 0.6e-6
#: A thaw put off for this long (seconds) on a busy loop, with the frozen set ``OVERDUE_FACTOR``
#: times the size that called for it, runs busy or not: a process that is never quiet (a
#: leader busy for good) would otherwise keep the frozen set's reference cycles without bound.
#: Far longer than a 100,000-task create or removal (50-90 s each on 1,000 hollow nodes): the
#: pass after those, on a quiet loop, is the one that is wanted.
OVERDUE_AFTER = 600.0
#: See ``OVERDUE_AFTER``; the set grown to this factor squared runs the pass at once (a store
#: growing fast: the heap stays within a constant multiple of the live set).
OVERDUE_FACTOR = 4
#: While a due pass is put off, the frozen set is counted exactly (a walk of every frozen object)
#: at most this often (seconds); the steps between take the last count plus what each froze, an
#: upper bound, and count exactly only when that bound would let the pass run.
RECOUNT_AFTER = 10.0
#: A pass that has become due waits up to this many more quiet steps (drawn at random for each
#: pass): the members of a cluster turn quiet together and would hold their loops together.
#: Steps come every ``FREEZE_PERIOD`` at a phase of each process's own, and a pass under load
#: holds its loop up to about one period: draws one step apart may still overlap, so the
#: range is wide (two followers then overlap about one time in ten); a later pass costs nothing.
QUIET_JITTER_STEPS = 10
#: A full pass that freed less than this fraction of the frozen set found (almost) no frozen
#: cycles: the next waits for the set to grow twice as much (up to ``MAX_GROWTH``).
USEFUL_FRACTION = 0.1
#: How much the frozen set may grow between two full passes at most (when each pass finds
#: nothing): a store growing to 100,000 tasks then takes about two passes, not five.
MAX_GROWTH = 16


class CollectorPolicy:
    """Keeps full garbage collections proportional to recent allocations, not to the store."""

    def __init__(
        self,
        period: float = FREEZE_PERIOD,
        min_thaw_size: int = MIN_THAW_SIZE,
        young_threshold: int | None = None,
        pause_budget: float = PAUSE_BUDGET,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.period = period
        self.min_thaw_size = min_thaw_size
        #: The youngest generation's threshold while the policy runs (None: Python's, 700). A
        #: process-wide setting, as the oldest's is: given back when the last policy stops.
        self.young_threshold = young_threshold
        #: The longest expected pause of a pass that may run on a busy loop (seconds).
        self.pause_budget = pause_budget
        self._clock = clock
        #: Draws in [0, 1) that spread the passes of processes reaching the same sizes together.
        self._jitter = jitter
        #: Objects frozen just after the last full pass: the live set then.
        self.baseline = 0
        #: Objects frozen since the last full pass (an upper bound: some were freed since).
        self.added = 0
        self.freezes = 0
        self.thaws = 0
        #: Thaws put off because the loop was busy (the set had doubled).
        self.thaws_put_off = 0
        #: Steps in a row that ran on time (the loop had time to spare).
        self.quiet_steps = 0
        #: The frozen set's size that calls for a full pass, as a multiple of ``baseline``:
        #: 2 while passes find cycles to free, doubled after each that finds next to none.
        self.growth = 2
        #: The loop thread's CPU the last pass took per frozen object (seconds): the next one's
        #: expected pause on an idle machine.
        self.cpu_per_object = DEFAULT_CPU_PER_OBJECT
        #: When the pass became due and was first put off (None: not due, or not yet put off).
        self.due_since: float | None = None
        #: When the frozen set was last counted exactly while its due pass was put off (None:
        #: not put off). ``gc.get_freeze_count`` walks every frozen object: done on every step
        #: of a busy leader's put-off pass it was 2.7% of the leader's CPU in a 100,000 create.
        self.counted_at: float | None = None
        #: This pass's random share of the extra wait (``QUIET_JITTER_STEPS``, ``OVERDUE_AFTER``).
        self.spread = self._jitter()
        self._started = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        _hold_automatic_full_collections()
        if self.young_threshold is not None:
            _, middle, oldest = gc.get_threshold()
            gc.set_threshold(self.young_threshold, middle, oldest)
        self._started = True
        self.step()  # what start-up built (plugins, the loaded store) is frozen at once
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-policy")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._started:
            self._started = False
            _release_automatic_full_collections()
        gc.unfreeze()  # a stopped manager in a longer-lived process (tests) leaves nothing frozen

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked, cpu, demand, own = (
                loop.time(),
                time.process_time(),
                loop_thread_demand(),
                time.thread_time(),
            )
            await asyncio.sleep(self.period)
            elapsed = max(loop.time() - asked, 1e-9)
            demand, own = loop_thread_demand() - demand, time.thread_time() - own
            self.step(
                late=elapsed - self.period,
                cpu_share=max(time.process_time() - cpu, demand) / elapsed,
                stretch=stretch_of(demand, own),
            )

    def step(self, late: float = 0.0, cpu_share: float = 0.0, stretch: float = 1.0) -> None:
        """Freeze the survivors of a young collection; once the frozen set doubled since the
        last full pass, unfreeze it and collect it whole (reference cycles among frozen objects
        are reclaimed there), then freeze the live set again.

        ``gc.get_freeze_count`` walks the whole frozen set (millions of objects in a manager at
        10,000 tasks), so it is asked only when what was frozen since the last pass, counted
        as it is frozen (``gc.get_objects(2)``: only the objects since the previous step),
        could have doubled the set; objects freed since make that count an upper bound. While
        the due pass is put off, the set is counted again only every ``RECOUNT_AFTER`` or when
        that upper bound would let the pass run.

        ``late``: how much later than asked this step runs; ``cpu_share``: the share of a core
        the process used since the previous step, or that its loop's thread used or waited for
        (``loop_thread_demand``), whichever is more. A late step or one after a busy period
        found the process busy, and the thaw waits until ``QUIET_STEPS`` steps in a row were
        neither (see ``_may_pass`` for the passes a busy loop gets). ``stretch``: the wall time
        per CPU second the loop's thread had lately (1: the machine let it run at once)."""
        # Only the objects not frozen: those since the previous step. Their cycles die here
        # rather than wait in the frozen set.
        gc.collect(2)
        if self.min_thaw_size != NEVER_THAW:  # a policy that never thaws needs no count
            self.added += len(gc.get_objects(2))
        gc.freeze()
        self.freezes += 1
        quiet = late < BUSY_LATENESS and cpu_share < BUSY_CPU_SHARE
        self.quiet_steps = self.quiet_steps + 1 if quiet else 0
        if not self.baseline:
            self.baseline = gc.get_freeze_count()
            self.added = 0
            return
        if self.added < max(self.min_thaw_size, (self.growth - 1) * self.baseline):
            return
        due = max(self.min_thaw_size, self.growth * self.baseline)
        if self.counted_at is not None and self._clock() - self.counted_at < RECOUNT_AFTER:
            # Put off since an exact count: the count then plus what was frozen since is an
            # upper bound. Only a pass it allows is worth a walk of the whole set to confirm.
            if not self._may_pass(self.baseline + self.added, due, stretch):
                self.thaws_put_off += 1
                return
        frozen = gc.get_freeze_count()
        self.added = frozen - self.baseline  # the exact growth, freed objects deducted
        if frozen < due:
            self.due_since = self.counted_at = None
            return
        reason = self._may_pass(frozen, due, stretch)
        if not reason:
            self.thaws_put_off += 1
            self.counted_at = self._clock()
            if self.due_since is None:
                self.due_since = self.counted_at
            return
        self._pass(frozen, reason)

    def _may_pass(self, frozen: int, due: int, stretch: float) -> str:
        """Why the pass due over ``frozen`` objects may run now ("" while it may not): the loop
        is quiet and the machine lets the pass end well within an election timeout, or the
        pass is short enough not to cost an election on a busy loop, or it is overdue."""
        expected = frozen * self.cpu_per_object * stretch
        quiet = self.quiet_steps >= QUIET_STEPS + round(self.spread * QUIET_JITTER_STEPS)
        if quiet and expected <= max(self.pause_budget, QUIET_PAUSE_BUDGET):
            return "quiet loop"
        if expected <= self.pause_budget:
            return "short"
        if frozen >= OVERDUE_FACTOR**2 * due:
            return "overdue"
        waited = 0.0 if self.due_since is None else self._clock() - self.due_since
        if frozen >= OVERDUE_FACTOR * due and waited >= OVERDUE_AFTER * (1 + self.spread / 2):
            return "overdue"
        return ""

    def _pass(self, frozen: int, reason: str) -> None:
        """The full pass: every live object walked once, frozen cycles freed, the rest frozen."""
        began, cpu = time.perf_counter(), time.thread_time()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        took, cpu = time.perf_counter() - began, time.thread_time() - cpu
        self.baseline = gc.get_freeze_count()
        self.added = 0
        self.thaws += 1
        self.due_since = self.counted_at = None
        self.spread = self._jitter()
        self.cpu_per_object = cpu / max(frozen, 1)
        useful = frozen - self.baseline >= USEFUL_FRACTION * frozen
        self.growth = 2 if useful else min(2 * self.growth, MAX_GROWTH)
        log.info(
            "full garbage collection: %d objects live (were %d frozen), %.0f ms; next at %dx (%s; %.0f ms of CPU)",
            self.baseline,
            frozen,
            took * 1000,
            self.growth,
            reason,
            cpu * 1000,
        )


def stretch_of(demand: float, cpu: float) -> float:
    """Wall seconds a pass may take per CPU second on this machine now: the loop thread's CPU
    and run-queue wait over its CPU lately (``demand``, ``cpu``: seconds since the previous
    step), or the load average per CPU, whichever is more.

    A thread that mostly sleeps is woken promptly (the scheduler favours sleepers) and its
    own wait understates what a long burst meets: a quiet pass of 0.15 s of CPU took 0.46 s
    at load 5.5 on 2 CPUs, about what the load per CPU (2.75) says. A loop that hardly ran
    says nothing of its own (under ``MIN_STRETCH_SAMPLE``)."""
    machine = os.getloadavg()[0] / (os.cpu_count() or 1)
    own = demand / cpu if cpu >= MIN_STRETCH_SAMPLE else 1.0
    return max(1.0, machine, own)


def loop_thread_demand() -> float:
    """Seconds the calling thread (the event loop's) has run on a CPU or waited to, since it
    started; its CPU time where the kernel does not say (no ``SCHEDSTAT``).

    The CPU used alone does not show a busy loop on a loaded machine: a leader creating
    100,000 tasks on 2 cores at load 6-9 got a third of a core, under ``BUSY_CPU_SHARE``, its
    steps on time between short callbacks, and the policy took it for quiet. A thread that
    waits for a CPU wants it: CPU and wait together are what it would have used."""
    try:
        with open(SCHEDSTAT, "rb") as stats:
            on_cpu, waited = stats.read().split()[:2]
    except (OSError, ValueError):
        return time.thread_time()
    return (int(on_cpu) + int(waited)) / 1e9


#: Policies running in this process (several daemons share one in tests) and the thresholds
#: from before the first: the last to stop gives them back, not whichever stops last.
_holders = 0
_thresholds_before: tuple[int, int, int] = gc.get_threshold()


def _hold_automatic_full_collections() -> None:
    global _holders, _thresholds_before
    if _holders == 0:
        _thresholds_before = gc.get_threshold()
        young, middle, _ = _thresholds_before
        gc.set_threshold(young, middle, NO_AUTOMATIC_FULL_COLLECTION)
    _holders += 1


def _release_automatic_full_collections() -> None:
    global _holders
    _holders -= 1
    if _holders == 0:
        gc.set_threshold(*_thresholds_before)
