"""Hollow nodes at scale: N hollow workers (``shoal hollow``) against 3 real manager processes.

Measures, on this machine, in one run:

* join: ``shoal hollow --count N`` started -> N nodes Ready in ``node ls``;
* ``node ls`` / ``service ls`` latency with N nodes;
* ``service create --replicas R`` -> R/R running, for each R given, then ``service rm``;
* over each phase: the leader's CPU (% of one core) and peak RSS, and whether any hollow node
  was ever not Ready after the join (a missed heartbeat).

    .venv/bin/python bench/bench_hollow.py --nodes 100 --replicas 1000
    .venv/bin/python bench/bench_hollow.py --nodes 1000 --processes 2 --replicas 1000,10000

The managers run the fake runtime too and the swarm uses the ``fake`` network plugin, so
nothing touches a container engine or the host's network. ``--profile`` records the leader
with py-spy (``pip install py-spy``) during the largest create and prints the hottest frames.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import SHOAL, ShoalNode, terminate, wait_until

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    cpu_percent: float = 0.0
    peak_rss_mib: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def measured(name: str, pid: int, phases: list[Phase]) -> Iterator[Phase]:
    """Wall time, the leader's CPU share and peak RSS (sampled every 0.2 s) over a phase."""
    phase = Phase(name)
    peak = [rss_bytes(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], rss_bytes(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, began = cpu_seconds(pid), time.monotonic()
    try:
        yield phase
    finally:
        phase.seconds = time.monotonic() - began
        phase.cpu_percent = 100 * (cpu_seconds(pid) - cpu0) / max(phase.seconds, 1e-9)
        stop.set()
        sampler.join()
        phase.peak_rss_mib = peak[0] / 2**20
        phases.append(phase)
        print(
            f"  {phase.name}: {phase.seconds:.2f} s, leader CPU {phase.cpu_percent:.0f}%, "
            f"peak RSS {phase.peak_rss_mib:.0f} MiB {phase.extra or ''}",
            flush=True,
        )


def node_rows(manager: ShoalNode) -> list[dict[str, Any]]:
    """``node ls`` rows; [] when the call fails (a leader change under load), to be retried."""
    result = manager.cli("node", "ls", "--format", "json", timeout=300)
    return result.json_lines() if result.returncode == 0 else []


def nodes_by_status(manager: ShoalNode) -> collections.Counter[str]:
    return collections.Counter(r["Status"] for r in node_rows(manager))


def leader_name(manager: ShoalNode) -> str:
    rows = [r for r in node_rows(manager) if r.get("ManagerStatus") == "Leader"]
    return str(rows[0]["Hostname"]) if rows else ""


def running_count(manager: ShoalNode, service: str) -> int:
    result = manager.cli("service", "ls", "--format", "json", timeout=300)
    if result.returncode != 0:
        return 0
    for row in result.json_lines():
        if row["Name"] == service:
            return int(str(row["Replicas"]).split("/")[0])
    return 0


def timed(manager: ShoalNode, *args: str) -> float:
    """Seconds one CLI call took (a real process: Python start-up counts); -1 if it failed."""
    began = time.monotonic()
    result = manager.cli(*args, timeout=300)
    return time.monotonic() - began if result.returncode == 0 else -1.0


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--managers", type=int, default=3)
    parser.add_argument("--replicas", default="1000", help="comma-separated replica counts")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the state directory behind")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # run the cleanup below
    base = Path(tempfile.mkdtemp(prefix="bench-hollow-"))
    phases: list[Phase] = []
    managers: list[ShoalNode] = []
    fleet: subprocess.Popen[bytes] | None = None
    print(
        f"bench_hollow: {args.nodes} hollow nodes in {args.processes} process(es), {args.managers} managers, "
        f"{os.cpu_count()} CPUs, state in {base}",
        flush=True,
    )
    try:
        leader = ShoalNode(base=base, name="m1", runtime="fake").start()
        managers.append(leader)
        leader.init("--plugin", "network=fake")
        for index in range(2, args.managers + 1):
            node = ShoalNode(base=base, name=f"m{index}", runtime="fake").start()
            node.join(leader, "manager")
            managers.append(node)

        def leader_pid() -> int:
            """The current leader's process (leadership may move under load)."""
            name = wait_until(lambda: leader_name(leader), 60, 0.5, "a leader")
            found = [m for m in managers if m.name == name and m.proc is not None]
            assert found and found[0].proc is not None
            return int(found[0].proc.pid)

        pid = leader_pid()
        token = leader.ok("swarm", "join-token", "-q", "worker").stdout.strip()
        log = open(base / "hollow.log", "ab")
        want = args.nodes + args.managers
        with measured(f"join {args.nodes}", pid, phases) as phase:
            fleet = subprocess.Popen(
                [
                    *SHOAL,
                    "hollow",
                    "--managers",
                    ",".join(m.addr for m in managers),
                    "--token",
                    token,
                    "--count",
                    str(args.nodes),
                    "--processes",
                    str(args.processes),
                    "--state-dir",
                    str(base / "hollow"),
                ],
                stdout=log,
                stderr=log,
            )
            wait_until(lambda: nodes_by_status(leader)["Ready"] >= want, 1800, 1.0, f"{want} nodes Ready")
        phase.extra["node_ls_s"] = round(timed(leader, "node", "ls"), 3)
        phase.extra["service_ls_s"] = round(timed(leader, "service", "ls"), 3)
        print(
            f"  node ls {phase.extra['node_ls_s']} s, service ls {phase.extra['service_ls_s']} s", flush=True
        )

        not_ready_seen = [0]
        for replicas in [int(r) for r in args.replicas.split(",")]:
            name = f"s{replicas}"
            spy = None
            pid = leader_pid()
            if args.profile and replicas == max(int(r) for r in args.replicas.split(",")):
                spy = profile_leader(pid, 60, base / f"profile-{replicas}.txt")
            with measured(f"create --replicas {replicas} to {replicas}/{replicas}", pid, phases) as phase:
                leader.ok(
                    "service",
                    "create",
                    "--name",
                    name,
                    "--replicas",
                    str(replicas),
                    "--detach",
                    "app:1",
                    timeout=300,
                )

                def converged(replicas: int = replicas, name: str = name) -> bool:
                    status = nodes_by_status(leader)
                    if status:
                        not_ready_seen[0] = max(not_ready_seen[0], want - status["Ready"])
                    return running_count(leader, name) >= replicas

                wait_until(converged, 1800, 0.5, f"{replicas} running")
                phase.extra["leader_pid_after"] = leader_pid()
            phase.extra["leader_pid"] = pid
            phase.extra["service_ps_s"] = round(timed(leader, "service", "ps", name), 3)
            phase.extra["node_ls_s"] = round(timed(leader, "node", "ls"), 3)
            print(
                f"  service ps {phase.extra['service_ps_s']} s, node ls {phase.extra['node_ls_s']} s",
                flush=True,
            )
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                spy.wait(120)
                raw = base / f"profile-{replicas}.txt"
                if raw.exists():
                    print("  leader's hottest frames (self time):")
                    for frame, share in hottest(raw):
                        print(f"    {share:5.1f}%  {frame}")
            with measured(f"service rm {replicas}", pid, phases):
                leader.ok("service", "rm", name, timeout=300)
        print(f"  nodes not Ready at any sample after the join: {not_ready_seen[0]}")
        print(json.dumps([phase.__dict__ for phase in phases], indent=1))
    finally:
        terminate(fleet, 60)
        for manager in managers:
            manager.kill()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
