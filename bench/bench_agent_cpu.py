"""The agent's own CPU per task, in one process, without managers or gRPC (issue 18).

N real agents on the fake runtime, each against a stub manager (``shoal.testing.stubmanager``)
that opens its session, sends it K tasks in incremental assignment messages, counts the status
reports until every task is RUNNING, then shuts the tasks down and removes them. Prints the process's CPU time per task
for both halves, and the status calls and updates per task: the part of a hollow fleet's CPU
that is the agent's (the rest is gRPC and TLS, which ``bench_hollow.py`` includes). Light: no
lock needed, but give the load average with every figure.

    .venv/bin/python bench/bench_agent_cpu.py 200 10            # 200 agents x 10 tasks
    .venv/bin/python bench/bench_agent_cpu.py 50 100 --per-message 25
    .venv/bin/python bench/bench_agent_cpu.py 100 100 --per-message 1 --gap 0.1   # 100 per node, one by one
    .venv/bin/python bench/bench_agent_cpu.py 200 10 --profile out.prof   # cProfile, CPU time
    .venv/bin/python bench/bench_agent_cpu.py 100 100 --per-message 1 --gap 0.1 --collector   # as a hollow process
    .venv/bin/python bench/bench_agent_cpu.py 100 100 --per-message 1 --gap 0.1 --stop-hold-ms 1000   # a big rm

``--collector`` runs the collector policy of a hollow fleet process (``fleet_collector``), as
``shoal hollow`` does; without it the agents run under Python's own collector. Either way the
CPU the garbage collector took is printed (each collection's CPU time, from ``gc.callbacks``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import tempfile
import time
from pathlib import Path

from shoal.agent.agent import Agent
from shoal.hollow.fleet import fleet_collector
from shoal.roles.transport import TLSMaterial
from shoal.testing.stubmanager import StubManager, assigned_task
from shoal_runtime_fake.options import FakeOptions
from shoal_runtime_fake.runtime import FakeRuntime


async def measure(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-agent-cpu-"))
    managers: list[StubManager] = []
    agents: list[Agent] = []
    for number in range(args.agents):
        node = f"node{number:05d}"
        manager = StubManager(
            [assigned_task(node, i) for i in range(args.tasks)],
            per_message=args.per_message,
            gap=args.gap,
            stop_hold_ms=args.stop_hold_ms,
        )
        agent = Agent(
            node_id=node,
            state_dir=base / node,
            runtime=FakeRuntime(FakeOptions()),
            runtime_name="fake",
            transport=manager,  # type: ignore[arg-type]
            tls=lambda: TLSMaterial(b"", b"", b""),
            managers=["m1:2377"],
        )
        await agent.start()
        managers.append(manager)
        agents.append(agent)
    await asyncio.gather(*(agent.connected.wait() for agent in agents))
    collector = fleet_collector() if args.collector else None
    if collector is not None:
        collector.start()
    collecting = CollectorTime()
    gc.callbacks.append(collecting)
    total = args.agents * args.tasks
    profile = cProfile.Profile(time.process_time) if args.profile else None
    if profile is not None:
        profile.enable()
    transactions = sum(agent.db.transactions for agent in agents)
    cpu, wall = time.process_time(), time.monotonic()
    for manager in managers:
        manager.go.set()
    await asyncio.gather(*(manager.all_running.wait() for manager in managers))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    calls = sum(len(manager.reports) for manager in managers)
    updates = sum(manager.updates for manager in managers)
    transactions = sum(agent.db.transactions for agent in agents) - transactions
    print(
        f"{total} tasks to RUNNING: {1000 * cpu / total:.3f} ms of CPU per task ({cpu:.2f} s, wall {wall:.2f} s), "
        f"{calls / total:.2f} status calls, {updates / total:.2f} updates and "
        f"{transactions / total:.2f} task DB transactions per task, "
        f"{1000 * collecting.take() / total:.3f} ms of it in the garbage collector"
    )
    transactions = sum(agent.db.transactions for agent in agents)
    cpu, wall = time.process_time(), time.monotonic()
    for manager in managers:
        manager.stop.set()
    while any(agent.tasks_held for agent in agents):  # noqa: ASYNC110 (no event for "none held")
        await asyncio.sleep(0.01)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    print(
        f"shut down and removed: {1000 * cpu / total:.3f} ms of CPU per task ({cpu:.2f} s, wall {wall:.2f} s), "
        f"{(sum(len(m.reports) for m in managers) - calls) / total:.2f} status calls and "
        f"{(sum(agent.db.transactions for agent in agents) - transactions) / total:.2f} task DB transactions per task, "
        f"{1000 * collecting.take() / total:.3f} ms of it in the garbage collector; load average {os.getloadavg()[0]:.1f}"
    )
    gc.callbacks.remove(collecting)
    if collector is not None:
        await collector.stop()
    for agent in agents:
        await agent.stop()


class CollectorTime:
    """The CPU time of the garbage collections since the last ``take`` (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.process_time()
        else:
            self.seconds += time.process_time() - self._began

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("agents", type=int)
    parser.add_argument("tasks", type=int, help="tasks per agent")
    parser.add_argument("--per-message", type=int, default=10, help="tasks per assignment message")
    parser.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds between a node's assignment messages (0: all at once); at 100,000 replicas on "
        "1,000 nodes a node gets about one task per scheduler batch",
    )
    parser.add_argument(
        "--stop-hold-ms",
        type=int,
        default=0,
        help="the hold (report_within_ms) of the messages asking the tasks down, as the leader "
        "gives a big service's removal (1000); 0: none, as before",
    )
    parser.add_argument("--profile", help="write a cProfile (CPU time) of both halves here")
    parser.add_argument(
        "--collector", action="store_true", help="run a hollow fleet process's collector policy"
    )
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
