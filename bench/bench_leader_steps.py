"""The leader's own steps at scale, in one process: the longest stretch each phase holds the
event loop, and the CPU it costs per task (issue 18: 100,000 replicas on 1,000 nodes).

The real leader components (orchestrator with its restart supervisor and updates, scheduler
driver with the spread scheduler, task reaper) run against an in-memory store whose writes
commit at once; a stand-in for the agents marks what the leader asks for (RUNNING, or ended)
in status flushes of ``--flush`` tasks, as the dispatcher does. No gRPC, Raft or agents: what
is measured is the leader's per-step work and nothing else. ``shoal.looplag.LoopLagProbe``
gives the longest stretch; ``time.process_time`` the CPU (the stand-in's share is counted
apart and left out of the per-task figure).

Phases: create R replicas to R running; scale to S; every node Down at once (its tasks
replaced, the replacements pending) and back up until R run again; a new leader's
components started over the loaded store; ``service rm`` to zero tasks.

    .venv/bin/python bench/bench_leader_steps.py [--nodes 1000] [--replicas 100000] [--scale-to 110000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from shoal import states
from shoal.gcpolicy import CollectorPolicy
from shoal.looplag import GCPauses, LoopLagProbe
from shoal.manager.orchestrator import ReplicatedOrchestrator
from shoal.manager.reaper import TaskReaper
from shoal.manager.scheduler_driver import SchedulerDriver
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import DELETE, Event, ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store
from shoal_scheduler_spread.scheduler import SpreadScheduler

GIB = 1024**3
PAUSES = GCPauses()
SLOW: SlowSteps | None = None
PROFILE = ""
PROFILE_OUT = "leader-steps.prof"


class Agents:
    """Stand-in for every node's agent and the dispatcher's status flushes: what the leader
    asks of a task happens at once (assigned -> RUNNING, shut down or removed -> ended)."""

    def __init__(self, store: ObjectStore, flush: int) -> None:
        self.store = store
        self.flush = flush
        self.cpu = 0.0
        self._todo: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Tasks desired and reported RUNNING (kept here: counting them from the view every
        #: 50 ms held the loop longer than anything measured).
        self.running: set[str] = set()
        self._stop = store.listen(self)

    def restored(self) -> None:
        pass

    def applied(self, events: list[Event]) -> None:
        started = time.process_time()
        view = self.store.view
        for event in events:
            if event.kind == "node":
                if event.obj.status.state == pb.NodeStatus.READY and event.old is not None:
                    if event.old.status.state != pb.NodeStatus.READY:  # back: its agent reports
                        for task in view.node_tasks(event.obj.id):
                            self._todo[task.id] = None
                        self._wake.set()
                continue
            if event.kind != "task":
                continue
            task: pb.Task = event.obj
            if event.action != DELETE and task.desired_state == task.status.state == states.RUNNING:
                self.running.add(task.id)
            else:
                self.running.discard(task.id)
            if event.action != DELETE and self._wants(task):
                self._todo[task.id] = None
                self._wake.set()
        self.cpu += time.process_time() - started

    @staticmethod
    def _wants(task: pb.Task) -> bool:
        if task.desired_state == states.RUNNING:
            return states.ASSIGNED <= task.status.state < states.RUNNING
        return task.desired_state > states.RUNNING and states.ASSIGNED <= task.status.state <= states.RUNNING

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.05)  # the dispatcher's flush bucket
            while self._todo:
                ids = list(self._todo)[: self.flush]
                for task_id in ids:
                    del self._todo[task_id]
                await self.store.update(lambda tx, ids=ids: self._report(tx, ids))  # type: ignore[misc]

    def _report(self, tx: Tx, ids: list[str]) -> None:
        started = time.process_time()
        now = time.time()
        for task_id in ids:
            task = tx.task(task_id)
            if task is None or not self._wants(task):
                continue
            node = tx.node(task.node_id)
            if node is None or node.status.state != pb.NodeStatus.READY:
                continue  # its agent is gone: it reports when its node is back
            task = copy(task)
            task.status.state = states.RUNNING if task.desired_state == states.RUNNING else states.SHUTDOWN
            task.status.timestamp = now
            tx.update(task)
        self.cpu += time.process_time() - started


def make_nodes(count: int) -> list[pb.Node]:
    nodes = []
    for index in range(count):
        node = pb.Node(id=f"node{index:05d}{'x' * 16}", role=pb.NodeSpec.WORKER)
        node.spec.annotations.name = node.description.hostname = f"hollow-{index:04d}"
        node.spec.availability = pb.NodeSpec.ACTIVE
        node.spec.membership = pb.NodeSpec.ACCEPTED
        node.description.platform.os = "linux"
        node.description.resources.nano_cpus = 4 * 10**9
        node.description.resources.memory_bytes = 16 * GIB
        node.status.state = pb.NodeStatus.READY
        nodes.append(node)
    return nodes


class Leader:
    """The leader's task components, started and stopped together as the daemon does."""

    def __init__(self, store: ObjectStore) -> None:
        self.components: list[Any] = [
            ReplicatedOrchestrator(store),
            SchedulerDriver(store, SpreadScheduler()),
            TaskReaper(store),
        ]

    def start(self) -> None:
        for component in self.components:
            component.start()

    async def stop(self) -> None:
        for component in reversed(self.components):
            await component.stop()


class YieldingLog:
    """Commits at once, but applies on the next loop turn, as a store provider does (the
    entry's building and its apply are two steps of the loop, not one)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.index = 0

    async def propose(self, entry: bytes) -> int:
        await asyncio.sleep(0)
        self.index += 1
        self.store.apply(self.index, entry)
        return self.index


class SlowSteps:
    """Every loop step that took more than ``threshold`` of CPU, by what ran: the stretch it
    would hold the loop on an idle machine (the wall-clock lag on a loaded one is mostly
    other processes'). asyncio's debug mode names slow steps too, but slows every step."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.seen: dict[str, list[float]] = {}
        self._real = asyncio.events.Handle._run

    def start(self) -> None:
        real, seen, threshold = self._real, self.seen, self.threshold

        def timed(handle: asyncio.events.Handle) -> None:
            began = time.thread_time()
            real(handle)
            took = time.thread_time() - began
            if took > threshold:
                callback = getattr(handle, "_callback", None)
                owner = getattr(callback, "__self__", None)
                name = owner.get_name() if isinstance(owner, asyncio.Task) else repr(callback)[:80]
                seen.setdefault(name, []).append(took)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    def take(self) -> str:
        taken = ", ".join(
            f"{name} {len(times)}x up to {1000 * max(times):.0f} ms" for name, times in self.seen.items()
        )
        self.seen.clear()
        return taken


async def phase(
    name: str,
    tasks: int,
    probe: LoopLagProbe,
    agents: Agents,
    act: Callable[[], Any],
    done: Callable[[], bool],
    limit: float,
) -> None:
    probe.take()
    PAUSES.take()
    agent_cpu = agents.cpu
    profiler = None
    if PROFILE and name.startswith(PROFILE):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu, wall = time.process_time(), time.monotonic()
    await act()
    while not done():
        if time.monotonic() - wall > limit:
            print(f"{name}: NOT DONE after {limit:.0f} s")
            break
        await asyncio.sleep(0.05)
    wall = time.monotonic() - wall
    cpu = time.process_time() - cpu - (agents.cpu - agent_cpu)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(PROFILE_OUT)
    print(
        f"{name:<34} {wall:7.2f} s   leader CPU {cpu:6.2f} s ({1000 * cpu / max(tasks, 1):.3f} ms/task)"
        f"   longest loop stretch {1000 * probe.take():6.0f} ms (GC {1000 * PAUSES.take()[0]:.0f} ms)",
        flush=True,
    )
    if SLOW is not None:
        print(f"    steps over {1000 * SLOW.threshold:.0f} ms: {SLOW.take() or 'none'}", flush=True)


async def main(args: argparse.Namespace) -> None:
    collector = CollectorPolicy()  # as a manager daemon runs it
    collector.start()
    PAUSES.start()
    if SLOW is not None:
        SLOW.start()
    store = await instant_store()
    store.provider = YieldingLog(store)  # type: ignore[assignment]
    nodes = make_nodes(args.nodes)

    def add_nodes(tx: Tx) -> None:
        for node in nodes:
            tx.create(copy(node))

    await store.update(add_nodes)
    agents = Agents(store, args.flush)
    agents.start()
    leader = Leader(store)
    leader.start()
    probe = LoopLagProbe()
    probe.start()
    service = pb.Service(id="svc" + "x" * 22)
    service.spec.annotations.name = "web"
    service.spec.task.container.image = "app:1"
    service.spec.replicated.replicas = args.replicas
    print(f"pid {os.getpid()}, load average {os.getloadavg()}", flush=True)

    async def create() -> None:
        await store.update(lambda tx: tx.create(copy(service)))

    async def scale(replicas: int) -> None:
        def change(tx: Tx) -> None:
            current = copy(tx.service(service.id))  # type: ignore[type-var]
            current.spec.replicated.replicas = replicas
            tx.update(current)

        await store.update(change)

    async def set_nodes(state: int, ids: Iterable[str]) -> None:
        def change(tx: Tx) -> None:
            for node_id in ids:
                node = copy(tx.node(node_id))  # type: ignore[type-var]
                node.status.state = state  # type: ignore[assignment]
                tx.update(node)

        await store.update(change)

    async def down_and_back() -> None:
        before = len(store.view.tasks)
        await set_nodes(pb.NodeStatus.DOWN, [n.id for n in nodes])
        began = time.monotonic()  # until every task is replaced (the replacements pending)
        while len(store.view.tasks) < before + replicas and time.monotonic() - began < timeout:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await set_nodes(pb.NodeStatus.READY, [n.id for n in nodes])

    replicas, timeout = args.replicas, args.timeout
    await phase(
        f"create {replicas}",
        replicas,
        probe,
        agents,
        create,
        lambda: len(agents.running) >= replicas,
        timeout,
    )
    if args.scale_to:
        await phase(
            f"scale to {args.scale_to}",
            abs(args.scale_to - replicas),
            probe,
            agents,
            lambda: scale(args.scale_to),
            lambda: len(agents.running) == args.scale_to,
            timeout,
        )
        replicas = args.scale_to
    if args.down:
        await phase(
            f"every node Down, back: {replicas} again",
            replicas,
            probe,
            agents,
            down_and_back,
            lambda: (
                len(agents.running) >= replicas and len(store.view.service_tasks(service.id)) <= replicas * 2
            ),
            timeout,
        )
    await leader.stop()
    leader = Leader(store)

    async def new_leader() -> None:
        leader.start()
        await asyncio.sleep(1.0)

    await phase(
        f"new leader over {len(store.view.tasks)} tasks",
        replicas,
        probe,
        agents,
        new_leader,
        lambda: True,
        timeout,
    )
    await phase(
        "service rm to zero",
        replicas,
        probe,
        agents,
        lambda: store.update(lambda tx: tx.delete("service", service.id)),
        lambda: not store.view.tasks_by_service.get(service.id),
        timeout,
    )
    print(f"worst stretch of the run {1000 * probe.worst_ever:.0f} ms; load average {os.getloadavg()}")
    await probe.stop()
    await leader.stop()
    await agents.stop()
    await collector.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=100_000)
    parser.add_argument("--scale-to", type=int, default=0)
    parser.add_argument("--down", action="store_true", help="every node Down at once, then back")
    parser.add_argument("--flush", type=int, default=1000, help="tasks per status flush (default 1000)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase (s)")
    parser.add_argument("--profile", default="", help="cProfile the phase whose name starts so")
    parser.add_argument("--profile-out", default="leader-steps.prof", help="where its stats go")
    parser.add_argument("--slow", type=float, default=0.0, help="name every loop step longer than this (s)")
    arguments = parser.parse_args()
    SLOW = SlowSteps(arguments.slow) if arguments.slow else None
    PROFILE, PROFILE_OUT = arguments.profile, arguments.profile_out
    asyncio.run(main(arguments))
