"""Many hollow nodes on one event loop, and a fleet spread over several processes.

One process holds its nodes on one asyncio loop; each node has its own transport provider and
certificate, so its own mutual-TLS connection to the managers. Joins run a few
at a time (``join_concurrency``): every join is a CA signature and a store write on the leader,
and a thousand at once would only queue there. Several processes (``processes``) use more
cores; each runs its share of the indexes, so names stay distinct. Each process reports its
nodes' sessions and tasks in a status file (``status.py``) for benchmarks to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shoal.gcpolicy import NEVER_THAW, CollectorPolicy
from shoal.hollow.node import RUNTIME_PLUGIN, HollowNode, profile
from shoal.hollow.status import STATUS_INTERVAL, status_of, write_status
from shoal.hollow.traces import write_traces
from shoal.loader import PluginLoader
from shoal.looplag import LoopLagProbe, LoopLagReporter

log = logging.getLogger("shoal.hollow")

DEFAULT_JOIN_CONCURRENCY = 16


@dataclass
class FleetConfig:
    """What ``shoal hollow`` was asked for."""

    managers: list[str]
    token: str
    count: int
    state_dir: Path
    first_index: int = 0
    prefix: str = "hollow"
    transport: str = "grpc"
    join_concurrency: int = DEFAULT_JOIN_CONCURRENCY
    runtime_options: dict[str, str] = field(default_factory=dict)
    transport_options: dict[str, str] = field(default_factory=dict)


@dataclass
class FleetReport:
    """How the fleet came up: nodes running, joins that failed (one line each), and when."""

    started: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Fleet:
    """``config.count`` hollow nodes in this process."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.loader = PluginLoader(
            {"runtime": RUNTIME_PLUGIN, "transport": config.transport},
            {"runtime": config.runtime_options, "transport": config.transport_options},
        )
        self.nodes = [
            self._node(index) for index in range(config.first_index, config.first_index + config.count)
        ]

    def _node(self, index: int) -> HollowNode:
        """A node with its own transport provider: a provider keeps one channel per manager
        and replaces it when a call brings other TLS material (a renewed certificate), so
        nodes sharing one would evict each other's channels and pay a TLS handshake per call
        (that alone kept 1,000 hollow nodes from ever all being Ready)."""
        node_profile = profile(index, self.config.prefix)
        state_dir = self.config.state_dir / node_profile.hostname
        transport_dir = state_dir / "plugins" / f"transport-{self.config.transport}"
        transport = self.loader.provider("transport", self.loader.make_context("transport", transport_dir))
        return HollowNode(
            node_profile=node_profile,
            state_dir=state_dir,
            transport=transport,
            loader=self.loader,
            managers=self.config.managers,
        )

    async def start(self) -> FleetReport:
        """Join and start every node; a node that cannot join is reported, not fatal. Stopped
        half-way (cancelled: the fleet was told to stop while its nodes joined), it stops the
        nodes it had started before it gives up: none is left running with no one to stop it."""
        report = FleetReport()
        gate = asyncio.Semaphore(max(1, self.config.join_concurrency))
        began = time.monotonic()

        async def bring_up(node: HollowNode) -> None:
            async with gate:
                await node.join(self.config.token)
            await node.start()

        try:
            results = await asyncio.gather(*(bring_up(node) for node in self.nodes), return_exceptions=True)
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        for node, result in zip(self.nodes, results, strict=True):
            if isinstance(result, BaseException):
                report.failures.append(f"{node.profile.hostname}: {result}")
            else:
                report.started += 1
        report.seconds = time.monotonic() - began
        return report

    def connected(self) -> int:
        return sum(1 for node in self.nodes if node.connected)

    async def stop(self) -> None:
        """Stop every node's agent, then close every node's transport (also those of nodes
        whose agent would not stop cleanly)."""
        try:
            await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)
        finally:
            for node in self.nodes:
                with contextlib.suppress(Exception):
                    await node.transport.close()


class OneLineFormatter(logging.Formatter):
    """Log records as one line each, an exception as its type and message: a thousand agents
    losing their manager at once must not print a thousand tracebacks (the printing alone
    would starve the event loop that runs their heartbeats)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"hollow {record.levelname.lower()} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line += f": {type(error).__name__}: {error}"
        return line


def quiet_logging() -> None:
    """Warnings and errors on stderr, one line each."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


async def run_fleet(config: FleetConfig, say: Callable[[str], None]) -> int:
    """Run the fleet until SIGTERM or SIGINT; the exit status (1 if any node failed to join)."""
    quiet_logging()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fleet = Fleet(config)
    try:
        starting = asyncio.create_task(fleet.start(), name="hollow-start")
        stopping = asyncio.create_task(stop.wait(), name="hollow-stop")
        # Told to stop while the nodes join (a thousand take half a minute): stop now.
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            say("hollow: stopped while the nodes were joining")
            return 1
        stopping.cancel()
        report = starting.result()
        for failure in report.failures[:5]:
            say(f"hollow: {failure}")
        if len(report.failures) > 5:
            say(f"hollow: ... and {len(report.failures) - 5} more nodes could not join")
        say(
            f"hollow: {report.started}/{config.count} nodes started in {report.seconds:.1f}s"
            f" ({config.prefix}-{config.first_index:05d}..{config.prefix}-{config.first_index + config.count - 1:05d})"
        )
        if report.started:
            await _serve(fleet, config, stop)
        return 1 if report.failures else 0
    finally:
        await fleet.stop()


async def _serve(fleet: Fleet, config: FleetConfig, stop: asyncio.Event) -> None:
    """Keep the status file, the collector policy and the loop-lag log going until ``stop``;
    each is stopped and the nodes' session traces are written however the wait ends."""
    reporter = asyncio.create_task(_report_status(fleet, config), name="hollow-status")
    collector = fleet_collector()
    # The fleet's own loop lag in its log: a stall here times out its nodes' calls.
    lag = LoopLagReporter(LoopLagProbe())
    try:
        collector.start()
        lag.start()
        await stop.wait()
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        await lag.stop()
        await collector.stop()
        write_traces(config.state_dir / f"trace-{config.first_index}.json", fleet.nodes)


#: The youngest generation's threshold in a fleet process (Python's is 700); see
#: ``fleet_collector``.
FLEET_YOUNG_THRESHOLD = 10_000


def fleet_collector() -> CollectorPolicy:
    """Hundreds of agents' objects out of the collector's full passes, as in a manager: a pause
    here delays every node's heartbeat and status report in this process. Never one full pass
    over the frozen set either (a manager's reclaims frozen cycles once the set doubled): over
    500 agents' objects that pass held the loop 1.8-2.7 s while 10,000 tasks started, and the
    process's sessions timed out. A fleet lives for a benchmark: what it keeps is bounded.

    Young collections every ``FLEET_YOUNG_THRESHOLD`` allocations, not 700: each running task
    keeps ~45 tracked objects (its controller, its tasks, coroutines, futures and events), and
    at Python's threshold each of them was walked by a young collection, again by a middle one
    and again by the policy's step, which collects all that is not frozen every 2 s anyway.
    In process (``bench/bench_agent_cpu.py 100 100 --per-message 1 --gap 0.1 --collector``)
    the collector took 0.054-0.101 ms of the 0.35-0.50 ms of CPU per task, now 0.022-0.034 ms
    (with the fewer objects per task of the engine gate and the fake runtime). What a young
    collection walks stays small (10,000 objects at most, a few milliseconds)."""
    return CollectorPolicy(min_thaw_size=NEVER_THAW, young_threshold=FLEET_YOUNG_THRESHOLD)


async def _report_status(fleet: Fleet, config: FleetConfig) -> None:
    """Rewrite this process's status file (``hollow.status``) every STATUS_INTERVAL.

    The write (two fsyncs) runs in a thread: on the loop, a disk busy with other work held
    the loop of 500 nodes for as long as each fsync took, twice a second."""
    path = config.state_dir / f"status-{config.first_index}.json"
    while True:
        await asyncio.to_thread(write_status, path, status_of(fleet.nodes))
        await asyncio.sleep(STATUS_INTERVAL)


def shares(count: int, processes: int) -> list[tuple[int, int]]:
    """``(first_index, count)`` for each process: the nodes split as evenly as possible."""
    processes = max(1, min(processes, count))
    base, extra = divmod(count, processes)
    result, first = [], 0
    for number in range(processes):
        size = base + (1 if number < extra else 0)
        result.append((first, size))
        first += size
    return result


def run_processes(argv_for: Callable[[int, int], list[str]], count: int, processes: int) -> int:
    """Run one child ``shoal hollow`` per share, forward SIGTERM/SIGINT, wait for them all."""
    children = [
        subprocess.Popen([sys.executable, "-m", "shoal.cli.main", *argv_for(first, size)])
        for first, size in shares(count, processes)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
