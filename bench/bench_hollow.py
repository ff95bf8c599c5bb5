"""Hollow nodes at scale: N hollow workers (``shoal hollow``) against 3 real manager processes.

Measures, on this machine, in one run (phases chosen by flags, so a run can be short):

* join: ``shoal hollow --count N`` started -> N nodes Ready in ``node ls``; then ``node ls`` /
  ``service ls`` latency with N nodes;
* ``service create --replicas R`` -> R/R running, for each R given; every service but the last
  is removed at once, the last one stays for the phases below;
* ``--scale-to S``: ``service scale`` of the last service to S -> S/S;
* ``--failover``: ``kill -9`` of the leader -> a new leader, a write accepted through a
  surviving manager, every hollow node's session reopened after the kill (from the fleet's
  status files), the service back at its count with no task lost or added; the killed manager
  is then started again;
* ``--drain K``: ``node update --availability drain`` of K hollow nodes -> none of them runs a
  task and the service is back at its count;
* ``service rm`` -> the hollow nodes hold no task (``rm to zero``);
* over each phase: the leader's CPU (% of one core) and peak RSS, and whether a hollow node was
  ever not Ready after the join (a missed heartbeat).

    .venv/bin/python bench/bench_hollow.py --nodes 100 --replicas 1000
    .venv/bin/python bench/bench_hollow.py --nodes 1000 --processes 2 --replicas 1000,10000
    .venv/bin/python bench/bench_hollow.py --nodes 1000 --processes 2 --replicas 1000 --failover
    .venv/bin/python bench/bench_hollow.py --nodes 1000 --processes 2 --replicas 10000 \\
        --scale-to 20000 --drain 100 --failover --plot docs/img/hollow-1000.png

``--plot PATH`` writes a PNG (matplotlib): tasks running on the hollow nodes over time, and each
manager's CPU, with the phases marked. The managers run the fake runtime too and the swarm
uses the ``fake`` network plugin, so nothing touches a container engine or the host's network.
``--profile`` records the leader with py-spy (``pip install py-spy``) during the largest create
and prints the hottest frames.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import SHOAL, ShoalNode, terminate, wait_until
from shoal.client import Client, ClientError
from shoal.hollow.status import read_fleet
from shoal.hollow.traces import read_traces

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.5
PHASE_TIMEOUT = 1800
SERVICE = "big"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Sample:
    """Every ``SAMPLE_INTERVAL``: each live manager's CPU (% of one core) and RSS, and the
    hollow fleet's running tasks and open sessions."""

    t: float
    cpu: dict[str, float]
    rss_mib: dict[str, float]
    running: int
    connected: int


@dataclass
class Phase:
    name: str
    start: float = 0.0
    seconds: float = 0.0
    leader: str = ""
    cpu_percent: float = 0.0
    peak_rss_mib: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    """The swarm under test, the fleet, the sampler, and the phases measured so far."""

    def __init__(self, base: Path, managers: list[ShoalNode]) -> None:
        self.base = base
        self.managers = managers
        self.began = time.monotonic()
        self.samples: list[Sample] = []
        self.phases: list[Phase] = []
        self.not_ready_seen = 0
        self.want_ready = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        #: Open control connections by manager name (``api``).
        self._api: dict[str, Client] = {}
        #: ``shoal hollow`` once started (its CPU is sampled beside the managers').
        self.fleet_proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ the swarm

    def now(self) -> float:
        return time.monotonic() - self.began

    def live(self) -> list[ShoalNode]:
        return [m for m in self.managers if m.proc is not None and m.proc.poll() is None]

    def cli(self, *args: str, timeout: float = 300) -> Any:
        """A CLI call through the first live manager (the leader may have been killed)."""
        return self.live()[0].cli(*args, timeout=timeout)

    def api(self, method: str) -> Any:
        """One control call on a live manager's socket, over a connection kept open
        (``Client(keep_alive=True)``): the bench polls every 0.5 s, and a CLI process per poll
        (Python start-up, ~0.15 s of CPU each, two per poll) took about half a core of this
        2-core machine from the swarm being measured. None when the call fails (a leader
        change under load), to be retried."""
        for manager in self.live():
            client = self._api.get(manager.name)
            if client is None:
                client = self._api[manager.name] = Client(str(manager.socket), timeout=60, keep_alive=True)
            try:
                return client.call(method)
            except ClientError:
                self._drop_api(manager.name)
        return None

    def _drop_api(self, name: str) -> None:
        client = self._api.pop(name, None)
        if client is not None:
            client.close()

    def node_rows(self) -> list[dict[str, Any]]:
        """``node ls`` rows; [] when the call fails (a leader change under load), to be retried."""
        rows = self.api("node.ls")
        return rows if isinstance(rows, list) else []

    def leader_name(self) -> str:
        rows = [r for r in self.node_rows() if r.get("ManagerStatus") == "Leader"]
        return str(rows[0]["Hostname"]) if rows else ""

    def leader(self) -> ShoalNode:
        name = wait_until(self.leader_name, 120, 0.5, "a leader")
        return next(m for m in self.managers if m.name == name)

    def running_count(self, service: str = SERVICE) -> int:
        rows = self.api("service.ls")
        for row in rows if isinstance(rows, list) else []:
            if row["Name"] == service:
                return int(str(row["Replicas"]).split("/")[0])
        return 0

    def converged(self, replicas: int, service: str = SERVICE) -> bool:
        """R/R running; meanwhile, count the nodes seen not Ready (a missed heartbeat)."""
        status = collections.Counter(r["Status"] for r in self.node_rows())
        if status:
            self.not_ready_seen = max(self.not_ready_seen, self.want_ready - status["Ready"])
        return self.running_count(service) >= replicas

    def timed(self, *args: str) -> float:
        """Seconds one CLI call took (a real process: Python start-up counts); -1 if it failed."""
        began = time.monotonic()
        result = self.cli(*args)
        return round(time.monotonic() - began, 3) if result.returncode == 0 else -1.0

    def fleet(self) -> Any:
        return read_fleet(self.base / "hollow")

    # ------------------------------------------------------------------ sampling

    def start_sampling(self) -> None:
        self._sampler.start()

    def sampling(self) -> bool:
        return self._sampler.is_alive()

    def stop_sampling(self) -> None:
        self._stop.set()
        self._sampler.join()

    def _sample(self) -> None:
        last: dict[str, tuple[float, float]] = {}
        while not self._stop.wait(SAMPLE_INTERVAL):
            t = self.now()
            cpu: dict[str, float] = {}
            rss: dict[str, float] = {}
            # The managers, and the hollow processes (one "hollow" line: their sum).
            processes = [(m.name, m.proc.pid) for m in self.live() if m.proc is not None]
            processes += [("hollow", pid) for pid in fleet_pids(self.fleet_proc)]
            for name, pid in processes:
                try:
                    used, resident = cpu_seconds(pid), rss_bytes(pid)
                except (OSError, IndexError, ValueError):
                    continue  # it just died
                key = f"{name}:{pid}"
                if key in last:
                    then, was = last[key]
                    cpu[name] = cpu.get(name, 0.0) + 100 * (used - was) / max(t - then, 1e-9)
                last[key] = (t, used)
                rss[name] = rss.get(name, 0.0) + resident / 2**20
            fleet = self.fleet()
            self.samples.append(Sample(t, cpu, rss, fleet.running, fleet.connected))

    # ------------------------------------------------------------------ phases

    def log_offsets(self) -> dict[str, int]:
        """Where each manager's log ends now: a phase reads its managers' lines from there."""
        return {m.name: m.log.stat().st_size if m.log.exists() else 0 for m in self.managers}

    def phase(self, name: str, run: Callable[[Phase], None]) -> Phase:
        """Run one phase; its leader's CPU and peak RSS from the samples in its window, and
        from the managers' logs what held them (``log_summary``)."""
        phase = Phase(name, start=self.now())
        offsets = self.log_offsets()
        load_before = os.getloadavg()[0]
        try:
            run(phase)
        finally:
            phase.seconds = self.now() - phase.start
            phase.leader = self.leader().name
            window = [s for s in self.samples if phase.start <= s.t <= phase.start + phase.seconds]
            cpu = [s.cpu[phase.leader] for s in window if phase.leader in s.cpu]
            phase.cpu_percent = round(sum(cpu) / len(cpu), 1) if cpu else 0.0
            phase.peak_rss_mib = round(max((s.rss_mib.get(phase.leader, 0.0) for s in window), default=0.0))
            # CPU seconds each process spent in the phase (what the work costs, whatever the
            # machine's load: on a loaded machine a phase waits for CPU, it does not use more).
            names = {n for s in window for n in s.cpu}
            phase.extra["cpu_s"] = {
                n: round(sum(s.cpu.get(n, 0.0) for s in window) * SAMPLE_INTERVAL / 100, 1)
                for n in sorted(names)
            }
            sessions = [s.connected for s in window]
            phase.extra["sessions_lowest"] = min(sessions, default=0)
            phase.extra["load"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
            phase.extra.update(log_summary(self.managers, offsets))
            self.phases.append(phase)
            print(
                f"  {phase.name}: {phase.seconds:.2f} s, leader {phase.leader} CPU {phase.cpu_percent:.0f}%, "
                f"peak RSS {phase.peak_rss_mib:.0f} MiB {phase.extra or ''}",
                flush=True,
            )
        return phase


def log_summary(managers: list[ShoalNode], offsets: dict[str, int]) -> dict[str, Any]:
    """What the managers logged since ``offsets``: elections won (a leader change each), the
    longest loop stall each reported (``shoal.looplag``), its collector pauses of 100 ms or
    more, and its full passes over every object (``shoal.gcpolicy``): how many, and each one's
    held milliseconds and why it ran (a quiet loop, short, overdue)."""
    elections = 0
    stall_ms: dict[str, int] = {}
    slow_gc: dict[str, int] = {}
    passes: dict[str, int] = {}
    pass_ms: dict[str, list[str]] = {}
    for manager in managers:
        if not manager.log.exists():
            continue
        with manager.log.open("rb") as log:
            log.seek(offsets.get(manager.name, 0))
            text = log.read().decode(errors="replace")
        for line in text.splitlines():
            if "this node is now the leader" in line:
                elections += 1
            elif "event loop blocked for up to " in line:
                held = int(line.split("event loop blocked for up to ", 1)[1].split(" ", 1)[0])
                stall_ms[manager.name] = max(stall_ms.get(manager.name, 0), held)
            elif "garbage collection of generation" in line:
                slow_gc[manager.name] = slow_gc.get(manager.name, 0) + 1
            elif "full garbage collection:" in line:
                passes[manager.name] = passes.get(manager.name, 0) + 1
                pass_ms.setdefault(manager.name, []).append(_full_pass(line))
    return {
        "elections": elections,
        "stall_ms": stall_ms,
        "slow_gc": slow_gc,
        "gc_full_passes": passes,
        "gc_pass_ms": pass_ms,
    }


def _full_pass(line: str) -> str:
    """``shoal.gcpolicy``'s line of a full pass as "562 ms (quiet loop)" (its reason since
    issue 18's pause budget; none before)."""
    match = re.search(r"frozen\), (\d+) ms; next at \d+x(?: \((.*)\))?", line)
    if match is None:
        return "?"
    return f"{match.group(1)} ms" + (f" ({match.group(2)})" if match.group(2) else "")


def start_managers(base: Path, count: int, plugin_opts: list[str] | None = None) -> list[ShoalNode]:
    """``count`` managers on the fake runtime; ``plugin_opts`` (``transport.serving-thread=on``)
    given to each daemon as ``--plugin-opt``."""
    extra = [arg for opt in plugin_opts or [] for arg in ("--plugin-opt", opt)]
    first = ShoalNode(base=base, name="m1", runtime="fake", extra_args=list(extra)).start()
    first.init("--plugin", "network=fake")
    managers = [first]
    for index in range(2, count + 1):
        node = ShoalNode(base=base, name=f"m{index}", runtime="fake", extra_args=list(extra)).start()
        node.join(first, "manager")
        managers.append(node)
    return managers


def start_fleet(bench: Bench, nodes: int, processes: int) -> subprocess.Popen[bytes]:
    token = bench.cli("swarm", "join-token", "-q", "worker").stdout.strip()
    log = open(bench.base / "hollow.log", "ab")
    return subprocess.Popen(
        [
            *SHOAL,
            "hollow",
            "--managers",
            ",".join(m.addr for m in bench.managers),
            "--token",
            token,
            "--count",
            str(nodes),
            "--processes",
            str(processes),
            "--state-dir",
            str(bench.base / "hollow"),
        ],
        stdout=log,
        stderr=log,
    )


def create(bench: Bench, name: str, replicas: int) -> Callable[[Phase], None]:
    def run(phase: Phase) -> None:
        bench.cli("service", "create", "--name", name, "--replicas", str(replicas), "--detach", "app:1")
        wait_until(lambda: bench.converged(replicas, name), PHASE_TIMEOUT, 0.5, f"{replicas} running")

    return run


def scale(bench: Bench, replicas: int) -> Callable[[Phase], None]:
    def run(phase: Phase) -> None:
        result = bench.cli("service", "scale", "--detach", f"{SERVICE}={replicas}")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: bench.converged(replicas), PHASE_TIMEOUT, 0.5, f"{replicas} running")

    return run


def drain(bench: Bench, count: int, replicas: int) -> Callable[[Phase], None]:
    """Drain the first ``count`` hollow nodes (a few CLI calls at a time, as an operator's
    script would): done when none of them runs a task and the service is back at its count."""
    hosts = [f"hollow-{index:05d}" for index in range(count)]

    def run(phase: Phase) -> None:
        before = bench.fleet().running_by_node
        phase.extra["tasks_on_drained_nodes"] = sum(before.get(h, 0) for h in hosts)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda h: bench.cli("node", "update", "--availability", "drain", h), hosts))
        failed = [r.stderr.strip() for r in codes if r.returncode != 0]
        assert not failed, failed[:3]
        phase.extra["drain_commands_s"] = round(bench.now() - phase.start, 2)

        def empty_and_back() -> bool:
            on_drained = sum(bench.fleet().running_by_node.get(h, 0) for h in hosts)
            return on_drained == 0 and bench.converged(replicas)

        wait_until(empty_and_back, PHASE_TIMEOUT, 0.5, f"{count} drained nodes empty, {replicas} running")

    return run


def failover(bench: Bench, replicas: int, profile: bool = False) -> Callable[[Phase], None]:
    """``kill -9`` the leader; the times to a new leader, to a write accepted, and to every
    hollow node's session reopened, each from the kill; then the service's count. With
    ``profile``, py-spy records the surviving managers for the first 15 s after the kill."""

    def run(phase: Phase) -> None:
        old = bench.leader()
        assert old.proc is not None
        watched = [(m.name, m.proc.pid) for m in bench.live() if m is not old and m.proc is not None]
        watched += [(f"hollow-{pid}", pid) for pid in fleet_pids(bench.fleet_proc)]
        spies = [
            (name, profile_leader(pid, 15, bench.base / f"profile-failover-{name}.txt"))
            for name, pid in (watched if profile else [])
        ]
        # CPU seconds of each survivor and hollow process from the kill to every session back.
        cpu_before = {name: (pid, cpu_seconds(pid)) for name, pid in watched}
        killed_at_wall, killed_at = time.time(), time.monotonic()
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(30)
        phase.extra["killed"] = old.name
        phase.extra["killed_at_wall"] = killed_at_wall
        found: dict[str, float] = {}

        def write_accepted() -> bool:
            label = f"failover={int(killed_at_wall)}"
            if bench.cli("node", "update", "--label-add", label, "hollow-00000", timeout=60).returncode == 0:
                found["write_s"] = round(time.monotonic() - killed_at, 2)
                return True
            return False

        def sessions_back() -> bool:
            fleet = bench.fleet()
            if fleet.all_back_since(killed_at_wall):
                found["sessions_back_s"] = round(fleet.newest_session - killed_at_wall, 2)
                return True
            return False

        wait_until(write_accepted, 300, 0.1, "a write accepted after the leader was killed")
        new = bench.leader()
        found["leader_known_s"] = round(time.monotonic() - killed_at, 2)
        wait_until(sessions_back, 300, 0.2, "every hollow node's session back")
        phase.extra["cpu_s_until_back"] = {
            name: round(cpu_seconds(pid) - before, 1)
            for name, (pid, before) in cpu_before.items()
            if Path(f"/proc/{pid}").exists()
        }
        phase.extra.update(found, new_leader=new.name)
        phase.extra["failover_s"] = max(found["write_s"], found["sessions_back_s"])
        wait_until(lambda: bench.converged(replicas), PHASE_TIMEOUT, 0.5, f"{replicas} running")
        phase.extra["converged_s"] = round(time.monotonic() - killed_at, 2)
        listed = bench.cli("service", "ps", SERVICE, "-q", "--filter", "desired-state=running")
        phase.extra["tasks_desired_running"] = len(listed.stdout.split()) if listed.returncode == 0 else -1
        for name, spy in spies:
            if spy is not None and spy.wait(60) == 0:
                print(f"  {name}'s hottest frames in the 15 s after the kill (self time):")
                for frame, share in hottest(bench.base / f"profile-failover-{name}.txt"):
                    print(f"    {share:5.1f}%  {frame}")
        old.start()  # back as a follower, for the phases after this one

    return run


def print_session_steps(state_dir: Path, since: float) -> None:
    """Where the nodes' reconnects spent their time after the kill, from their session traces
    (``agent/sessiontrace.py``, written by the fleet when it stops): when each session opened
    again, and how many tries, retry-afters, redirects and timeouts it took."""
    opened: list[float] = []
    steps: collections.Counter[str] = collections.Counter()
    for rows in read_traces(state_dir).values():
        after = [row for row in rows if row[0] >= since]
        first = next((row[0] for row in after if row[1] == "opened"), None)
        if first is not None:
            opened.append(first - since)
        for at, event, _, detail in after:
            if first is None or at <= first:
                steps["timeout" if detail.startswith("TimeoutError") else event] += 1
    if not opened:
        return
    opened.sort()
    p50, p90 = opened[len(opened) // 2], opened[int(len(opened) * 0.9)]
    print(
        f"  sessions reopened after the kill: {len(opened)}, p50 {p50:.2f} s, p90 {p90:.2f} s, "
        f"last {opened[-1]:.2f} s; steps until then: {dict(steps)}",
        flush=True,
    )


def remove(bench: Bench, name: str) -> Callable[[Phase], None]:
    def run(phase: Phase) -> None:
        result = bench.cli("service", "rm", name)
        assert result.returncode == 0, result.stderr
        phase.extra["rm_command_s"] = round(bench.now() - phase.start, 2)
        wait_until(lambda: bench.fleet().tasks == 0, PHASE_TIMEOUT, 0.5, "no task left on the hollow nodes")

    return run


def profile_leader(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("  (py-spy not installed: pip install py-spy)")
        return None
    return subprocess.Popen(
        [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def fleet_pids(fleet: subprocess.Popen[bytes] | None) -> list[int]:
    """The hollow processes: the fleet's own and its children (``--processes``)."""
    if fleet is None:
        return []
    children = Path(f"/proc/{fleet.pid}/task/{fleet.pid}/children")
    found = [int(pid) for pid in children.read_text().split()] if children.exists() else []
    return found or [fleet.pid]


def hottest(raw: Path, top: int = 15) -> list[tuple[str, float]]:
    """Self time by function from py-spy's collapsed stacks (the last frame of each stack)."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        leaf = stack.split(";")[-1]
        own[leaf] += int(count)
        total += int(count)
    return [(frame, 100 * n / max(total, 1)) for frame, n in own.most_common(top)]


def plot(bench: Bench, path: Path, title: str) -> None:
    """Tasks running on the hollow nodes and sessions open, and each manager's CPU, over the
    run; phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [s.t for s in bench.samples]
    figure, (tasks, cpu) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    tasks.plot(times, [s.running for s in bench.samples], color="tab:blue")
    tasks.set_ylabel("tasks running on hollow nodes")
    # Sessions open on the same time axis: a fall of the sessions is where a run collapses.
    sessions = tasks.twinx()
    sessions.plot(times, [s.connected for s in bench.samples], color="tab:green", linewidth=0.8)
    sessions.set_ylabel("sessions open (green)")
    sessions.set_ylim(bottom=0)
    for name in sorted({n for s in bench.samples for n in s.cpu}):
        cpu.plot(times, [s.cpu.get(name, float("nan")) for s in bench.samples], label=name, linewidth=1)
    cpu.set_ylabel("manager CPU (% of one core)")
    cpu.set_xlabel("seconds since the managers started")
    cpu.legend(loc="upper right")
    for index, phase in enumerate(bench.phases):
        for axis in (tasks, cpu):
            axis.axvspan(
                phase.start, phase.start + phase.seconds, alpha=0.08 + 0.06 * (index % 2), color="grey"
            )
        tasks.annotate(
            phase.name.split(" to ")[0],
            (phase.start, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            fontsize=7,
        )
    tasks.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"  plot written to {path}", flush=True)


def report_of(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    return {
        "nodes": args.nodes,
        "processes": args.processes,
        "manager_plugin_opts": args.manager_plugin_opt,
        "load_average_end": os.getloadavg(),
        "not_ready_seen": bench.not_ready_seen,
        "phases": [asdict(p) for p in bench.phases],
    }


def main() -> None:
    global PHASE_TIMEOUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--managers", type=int, default=3)
    parser.add_argument(
        "--replicas", default="1000", help="comma-separated replica counts (the last one stays)"
    )
    parser.add_argument(
        "--scale-to", type=int, default=0, help="scale the last service to this many replicas"
    )
    parser.add_argument("--drain", type=int, default=0, help="drain this many hollow nodes")
    parser.add_argument("--failover", action="store_true", help="kill -9 the leader")
    parser.add_argument(
        "--profile-failover", action="store_true", help="py-spy the surviving managers after the kill"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="write a PNG of tasks running and manager CPU"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the phases as JSON")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--profile-seconds", type=float, default=60, help="how long --profile records (from the create)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the state directory behind")
    parser.add_argument(
        "--manager-plugin-opt",
        action="append",
        default=[],
        metavar="ROLE.KEY=VALUE",
        help="a --plugin-opt for every manager daemon (e.g. transport.serving-thread=on); repeatable",
    )
    parser.add_argument(
        "--phase-timeout",
        type=float,
        default=PHASE_TIMEOUT,
        help="give up on a phase after this many seconds",
    )
    args = parser.parse_args()
    PHASE_TIMEOUT = args.phase_timeout
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # run the cleanup below
    base = Path(tempfile.mkdtemp(prefix="bench-hollow-"))
    replicas_list = [int(r) for r in args.replicas.split(",")]
    fleet: subprocess.Popen[bytes] | None = None
    bench = Bench(base, [])
    print(
        f"bench_hollow: {args.nodes} hollow nodes in {args.processes} process(es), {args.managers} managers, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, state in {base}",
        flush=True,
    )
    try:
        bench.managers = start_managers(base, args.managers, args.manager_plugin_opt)
        bench.began = time.monotonic()
        bench.start_sampling()
        bench.want_ready = args.nodes + args.managers

        def join(phase: Phase) -> None:
            nonlocal fleet
            fleet = start_fleet(bench, args.nodes, args.processes)
            bench.fleet_proc = fleet
            wait_until(
                lambda: (
                    collections.Counter(r["Status"] for r in bench.node_rows())["Ready"] >= bench.want_ready
                ),
                PHASE_TIMEOUT,
                1.0,
                f"{bench.want_ready} nodes Ready",
            )

        phase = bench.phase(f"join {args.nodes}", join)
        phase.extra["node_ls_s"] = bench.timed("node", "ls")
        phase.extra["service_ls_s"] = bench.timed("service", "ls")
        print(
            f"  node ls {phase.extra['node_ls_s']} s, service ls {phase.extra['service_ls_s']} s", flush=True
        )

        for number, replicas in enumerate(replicas_list):
            last = number == len(replicas_list) - 1
            name = SERVICE if last else f"s{replicas}"
            spy = None
            others: list[subprocess.Popen[bytes] | None] = []
            if args.profile and replicas == max(replicas_list):
                leader = bench.leader()
                spy = profile_leader(
                    int(leader.proc.pid), args.profile_seconds, base / f"profile-{replicas}.txt"
                )  # type: ignore[union-attr]
                # The followers and the hollow processes too: a stall may be theirs.
                for manager in bench.live():
                    if manager is not leader and manager.proc is not None:
                        out = base / f"profile-{replicas}-{manager.name}.txt"
                        others.append(profile_leader(manager.proc.pid, args.profile_seconds, out))
                for pid in fleet_pids(fleet):
                    out = base / f"profile-{replicas}-hollow-{pid}.txt"
                    others.append(profile_leader(pid, args.profile_seconds, out))
            phase = bench.phase(
                f"create --replicas {replicas} to {replicas}/{replicas}", create(bench, name, replicas)
            )
            phase.extra["service_ps_s"] = bench.timed("service", "ps", name)
            phase.extra["node_ls_s"] = bench.timed("node", "ls")
            for other in others:
                if other is not None:
                    other.send_signal(signal.SIGINT)
                    other.wait(120)
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                spy.wait(120)
                raw = base / f"profile-{replicas}.txt"
                if raw.exists():
                    print("  leader's hottest frames (self time):")
                    for frame, share in hottest(raw):
                        print(f"    {share:5.1f}%  {frame}")
            if not last:
                bench.phase(f"service rm {replicas} to zero", remove(bench, name))
        replicas = replicas_list[-1]
        if args.scale_to:
            bench.phase(f"scale {replicas} to {args.scale_to}", scale(bench, args.scale_to))
            replicas = args.scale_to
        if args.failover:
            bench.phase(
                f"failover (kill -9 the leader, {replicas} tasks)",
                failover(bench, replicas, args.profile_failover),
            )
        if args.drain:
            bench.phase(f"drain {args.drain} nodes ({replicas} tasks)", drain(bench, args.drain, replicas))
        bench.phase(f"service rm {replicas} to zero", remove(bench, SERVICE))
        print(f"  nodes not Ready at any sample after the join: {bench.not_ready_seen}")
        print(json.dumps(report_of(args, bench), indent=1))
    finally:
        if bench.sampling():
            bench.stop_sampling()
        if args.json:  # also when a phase failed: its samples say how far it got
            samples = [asdict(s) for s in bench.samples]
            args.json.write_text(json.dumps({**report_of(args, bench), "samples": samples}))
        if args.plot and bench.samples:
            plot(
                bench,
                args.plot,
                f"{args.nodes} hollow nodes, {args.managers} managers, {os.cpu_count()} CPUs",
            )
        terminate(fleet, 60)
        for phase in bench.phases:
            if "killed_at_wall" in phase.extra:
                print_session_steps(bench.base / "hollow", phase.extra["killed_at_wall"])
        for manager in bench.managers:
            manager.kill()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
