"""The scheduler driver: feeds pending tasks to the scheduler provider and commits its decisions.

It runs on the leader, wakes 50 ms after the last relevant commit (at most 1 s after the
first, SwarmKit's debounce), groups unassigned tasks by (service, spec version) so the
provider places each group as one batch, and commits every decision of a tick in one store
transaction: ASSIGNED with a node, or PENDING with ``no suitable node (...)``. Pending tasks
are tried again on every later tick, so they start as soon as something changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from shoal import placement, states
from shoal.looppieces import in_pieces
from shoal.manager.netalloc import AllocationError
from shoal.manager.netobjects import Allocations
from shoal.manager.nodeload import NodeLoads, unassigned
from shoal.proto import objects_pb2 as pb
from shoal.roles.scheduler import NodeInfo, Placement, SchedulerProvider
from shoal.roles.store import StoreUnavailable
from shoal.store.memory import ObjectStore, Tx, Watch, copy

log = logging.getLogger("shoal.scheduler")

DEBOUNCE = 0.05
MAX_LATENCY = 1.0
#: No tick for this long: the cluster is idle, and the next event ticks at once.
QUIET = DEBOUNCE
#: Fewer tasks than this waiting for a node, none of them left over by the last tick, are
#: placed at once even right after a tick: a small service's tasks are one orchestrator commit,
#: with nothing more of theirs to gather. The debounce is for a stream of new tasks (a big
#: create or restart commits 250-500 per transaction); any tick, even one with nothing to place
#: (woken by the status reports of running tasks, a removal, its own commit), used to make the
#: next create on a busy cluster wait DEBOUNCE or more (55-90 ms between the orchestrator's
#: commit and the placement, back-to-back creates of 4 on the fake runtime, issue 18 item 4).
FEW_PENDING = 100
#: Placements committed per store transaction. One transaction for 10,000 placements held the
#: leader's event loop for seconds (building it, then applying it and waking every watcher),
#: long enough to miss Raft heartbeats; bounded ones let heartbeats run between them.
MAX_PLACEMENTS_PER_COMMIT = 500


#: Pending tasks grouped per loop step before a tick places them.
SORTED_PER_STEP = 5000


def _fits_nowhere(piece: list[pb.Task], decisions: list[Placement]) -> str:
    """The reason none of ``piece`` was placed, when none was and none names its node: the rest
    of its group (the same service and spec, the same nodes) fit nowhere either, and are told
    so without asking the provider again. With every node down, each tick asked it about
    every one of 100,000 pending tasks, 500 at a time, each piece a pass over every node."""
    if any(decision.node_id for decision in decisions) or any(task.node_id for task in piece):
        return ""
    return next((decision.reason for decision in decisions if decision.reason), "")


class SchedulerDriver:
    """Batches pending tasks, asks the provider, commits placements."""

    def __init__(
        self, store: ObjectStore, provider: SchedulerProvider, extra_filters: Sequence[Any] = ()
    ) -> None:
        self.store = store
        self.provider = provider
        # The extension filters plugins contributed (shoal_node_filters): handed to the
        # provider with every call, as the scheduler contract says, never through a global.
        self.extra_filters = placement.check_filters(extra_filters)
        self._task: asyncio.Task[None] | None = None
        #: Per-node totals and the pending tasks, kept as the store applies (a tick reads
        #: them instead of every task in the store).
        self.loads = NodeLoads(store)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        self.loads.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        await self.loads.start_in_pieces()  # each tick waits for it: it reads the totals
        with self.store.watch(["task", "node"]) as watch:
            while True:
                try:
                    await self.tick()
                except StoreUnavailable as exc:
                    log.warning("scheduler could not commit: %s", exc)
                except Exception:
                    log.exception("scheduler tick failed")
                last_tick = time.monotonic()
                left = self.loads.count_pending()  # what this tick could not place
                await watch.get()
                await self._settle(watch, last_tick, left)

    async def _settle(self, watch: Watch, last_tick: float, left: int) -> None:
        """Wait until the events that woke the scheduler are worth a tick.

        After a quiet spell (no tick for QUIET) the first event ticks at once, after one
        yield so the rest of its commit's events join it: a ``service create`` on an idle
        cluster is placed without a timer. So do a few new tasks after a tick that left none
        pending (``_few_new``): nothing is gathered by waiting for them. Otherwise debounce:
        wait for a spell of DEBOUNCE without events, at most MAX_LATENCY after the first.
        Events only queue meanwhile (no wakeup for each: a burst of writes would otherwise
        cost a timer and a task per write). ``left``: the tasks the last tick left pending.
        """
        if time.monotonic() - last_tick >= QUIET or self._few_new(left):
            await asyncio.sleep(0)
            watch.drain()
            return
        first = time.monotonic()
        while True:
            await asyncio.sleep(DEBOUNCE)
            if not watch.drain() or time.monotonic() - first >= MAX_LATENCY:
                break

    def _few_new(self, left: int) -> bool:
        """Whether the tasks waiting for a node now are only a few that arrived since the last
        tick (``left`` of them it could not place: those are tried again on the debounce's
        schedule, not at every commit)."""
        return left == 0 and self.loads.count_pending() < FEW_PENDING

    async def tick(self) -> None:
        """Place every unassigned task once.

        A group is placed MAX_PLACEMENTS_PER_COMMIT tasks at a time, each piece committed
        before the next is decided: 100,000 pending tasks were one synchronous call of the
        provider (seconds of the leader's loop) and then 200 commits. The pieces decide what
        the whole would have: the provider sees the same ``NodeInfo`` objects, which its
        placements of the earlier pieces changed."""
        self.loads.start()  # started with the driver; here for a driver only ticked (tests)
        pending = self.loads.pending()
        if not pending:
            return
        infos = self.loads.node_infos()
        nodes = list(infos.values())
        groups: dict[tuple[str, int], list[tuple[int, str, pb.Task]]] = defaultdict(list)
        # 100,000 tasks pending (every node down) are many steps
        async for piece in in_pieces(pending, SORTED_PER_STEP):
            for task in piece:
                groups[(task.service_id, task.spec_version)].append((task.slot, task.id, task))
        for key in sorted(groups):  # a deterministic order: the pending set has none
            keyed = groups[key]
            keyed.sort()
            batch = [task for _, _, task in keyed]
            fits_nowhere = ""
            for start in range(0, len(batch), MAX_PLACEMENTS_PER_COMMIT):
                piece = batch[start : start + MAX_PLACEMENTS_PER_COMMIT]
                if fits_nowhere and not any(task.node_id for task in piece):
                    decisions = [Placement(task_id=task.id, reason=fits_nowhere) for task in piece]
                else:
                    decisions = await self.provider.schedule(piece, nodes, self.extra_filters)
                    fits_nowhere = _fits_nowhere(piece, decisions)
                await self.store.update(lambda tx, d=decisions: self._commit(tx, d, infos))  # type: ignore[misc]

    def _commit(self, tx: Tx, decisions: list[Placement], infos: dict[str, NodeInfo]) -> None:
        now = time.time()
        networks = Allocations.of(tx)  # a placed task's addresses, one per network of its service
        for decision in decisions:
            task = tx.task(decision.task_id)
            if task is None or not unassigned(task):
                continue
            if decision.node_id:
                if decision.node_id not in infos or (task.node_id and task.node_id != decision.node_id):
                    continue
                placed = copy(task)
                try:
                    networks.task_networks(placed)
                except AllocationError as exc:  # a network is full: pending until addresses free
                    decision = Placement(task_id=task.id, reason=str(exc))
                else:
                    self._assign(tx, placed, decision.node_id, now)
                    continue
            err = f"no suitable node ({decision.reason})" if decision.reason else "no suitable node"
            if task.status.state == states.PENDING and task.status.err == err:
                continue
            task = copy(task)
            task.status.state = states.PENDING
            task.status.message = "pending task scheduling"
            task.status.err = err
            task.status.timestamp = now
            tx.update(task)

    @staticmethod
    def _assign(tx: Tx, task: pb.Task, node_id: str, now: float) -> None:
        preassigned = bool(task.node_id)
        task.node_id = node_id
        status = task.status  # reached once, not per field: this runs for every task placed
        status.state = states.ASSIGNED
        status.message = (
            "scheduler confirmed task can run on preassigned node"
            if preassigned
            else "scheduler assigned task to node"
        )
        status.err = ""
        status.timestamp = now
        tx.update(task)
