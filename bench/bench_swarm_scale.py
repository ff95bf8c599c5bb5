"""shoal beside Docker Swarm mode on the same multi-host shape, in one run (issue 18).

Both sides get the same cluster: M managers + W workers, each host a network namespace with
its own dockerd (tests/multihost.py: own data root, exec root, socket; hosts joined by an
underlay bridge on 198.18.0.0/24, nothing leaves the machine), every node running real
containers (``shoal-busybox:1`` ``sleep 3600``). A side gets fresh hosts; the sides alternate
(round 1 Swarm then shoal, round 2 shoal then Swarm, ...) so that load from elsewhere hits both.

Phases, each timed from just before the command (or the kill) to the end of the first poll that
shows the target state:

- ``ready``: ``swarm init`` on host 1, the other managers joined one at a time, the workers all
  at once -> every node Ready (managers Leader/Reachable) in ``node ls``;
- for each N: ``service create --replicas N`` -> N tasks desired and currently Running;
  ``scale`` to 2N -> 2N running; ``node update --availability drain`` of the last worker ->
  2N running and no container of the service running on that worker's engine; ``service rm``
  -> no container of the service on any engine (the worker is made active again, untimed);
- ``failover`` (with a service of the smallest N running): ``kill -9`` of the leader (shoal:
  its daemon; Swarm: its dockerd) -> the first ``service create`` accepted through a survivor
  (a new probe every 0.25 s, each its own CLI process, at most 40 in flight, as the anchor
  does: a call on a follower blocks until a leader is known); for shoal also -> every surviving
  node's agent logged a new session (``session ... open``) after the kill.

Both sides use ``--stop-grace-period 0s --restart-delay 0s`` (``sleep`` ignores SIGTERM, so the
default 10 s grace would be all that rm and drain measure) and Swarm gets the image by ID with
``--no-resolve-image`` and ``DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1`` (nothing pulled). Polls:
shoal through its client library on the leader's socket, Swarm through ``docker service ps``;
containers through each engine's ``docker ps`` (same on both sides). Over every phase the
leader's CPU (% of one core) and peak RSS are sampled: shoal's leader daemon, Swarm's leader
dockerd (the process that runs swarmkit; its containerd is not counted, nor is shoal's dockerd).

    flock /tmp/s3/heavy.lock .venv/bin/python bench/bench_swarm_scale.py \\
        [--managers 3] [--workers 5] [--replicas 20,100] [--rounds 1] [--json FILE]

Needs root (namespaces), dockerd, and the images of scripts/build-test-images.sh. Everything a
run makes (dockerds, shoal daemons, containers, namespaces with their nft tables, dirs) is
removed at the end, also on Ctrl-C, SIGTERM or an error (multihost's undo list).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import bench_hollow  # noqa: E402
import multihost  # noqa: E402
from bench_hollow import cpu_seconds, rss_bytes  # noqa: E402
from harness import SHOAL, ShoalNode, wait_until  # noqa: E402
from shoal.client import Client, ClientError  # noqa: E402

IMAGE = "shoal-busybox:1"
COMMAND = ("sleep", "3600")
FAST_STOP = ("--stop-grace-period", "0s", "--restart-delay", "0s")
POLL_SLEEP = 0.05
PHASE_TIMEOUT = 900.0
SWARM_LABEL = "com.docker.swarm.service.name"
SHOAL_LABEL = "io.shoal.service.name"
SESSION_OPEN = re.compile(r"session \S+ open with manager")


# ---------------------------------------------------------------------- measuring


@dataclass
class Phase(bench_hollow.Phase):
    """A phase of one side; ``cpu_percent`` and ``peak_rss_mib`` are the leader's."""

    side: str = ""


@contextmanager
def measured(side: str, name: str, pids: dict[str, int], phases: list[Phase]) -> Iterator[Phase]:
    """Wall time of the phase, and the leader's CPU share and peak RSS (every 0.2 s). Every
    manager in ``pids`` is sampled; the phase reports the one named ``phase.extra["leader"]``
    at its end (the first by default; a failover names the new leader)."""
    phase = Phase(name, side=side)
    peak = dict.fromkeys(pids, 0)
    cpu = dict.fromkeys(pids, 0.0)

    def read() -> None:
        for host, pid in pids.items():
            try:
                peak[host] = max(peak[host], rss_bytes(pid))
                cpu[host] = cpu_seconds(pid)
            except (OSError, IndexError, ValueError):  # the process is gone
                pass

    read()
    cpu0 = dict(cpu)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            read()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.monotonic()
    phase.extra["leader"] = next(iter(pids))
    try:
        yield phase
    finally:
        if not phase.seconds:
            phase.seconds = time.monotonic() - began
        stop.set()
        sampler.join()
        read()
        leader = phase.extra["leader"]
        phase.cpu_percent = 100 * (cpu[leader] - cpu0[leader]) / max(time.monotonic() - began, 1e-9)
        phase.peak_rss_mib = peak[leader] / 2**20
        phase.extra["loadavg_1m"] = round(os.getloadavg()[0], 2)
        phases.append(phase)
        print(
            f"  [{side}] {name}: {phase.seconds:.2f} s, leader CPU {phase.cpu_percent:.0f}%, "
            f"peak RSS {phase.peak_rss_mib:.0f} MiB {phase.extra}",
            flush=True,
        )


def poll(condition: Callable[[], bool], what: str, timeout: float = PHASE_TIMEOUT) -> float:
    """Poll back to back (50 ms apart); monotonic time at the end of the first poll that holds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_SLEEP)


def in_parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        return list(pool.map(lambda call: call(), calls))


# ---------------------------------------------------------------------- the two sides


class Side:
    """One orchestrator on a fresh set of hosts; the same operations for both."""

    name = ""
    label = ""

    def __init__(self, hosts: multihost.Cluster, managers: int) -> None:
        self.cluster = hosts
        self.hosts = hosts.hosts
        self.managers = self.hosts[:managers]
        self.workers = self.hosts[managers:]
        self.dead: set[str] = set()  # hosts whose leader process was killed

    # to implement
    def prepare(self) -> None: ...
    def swarm_cli(self, host: multihost.Host, *args: str) -> str: ...
    def manager_addr(self) -> str: ...
    def all_ready(self) -> bool: ...
    def create(self, service: str, replicas: int) -> None: ...
    def scale(self, service: str, replicas: int) -> None: ...
    def availability(self, host: multihost.Host, value: str) -> None: ...
    def remove(self, service: str) -> None: ...
    def running(self, service: str) -> int: ...
    def leader(self) -> multihost.Host: ...
    def leader_pid(self, host: multihost.Host) -> int: ...
    def kill(self, host: multihost.Host) -> None: ...
    def probe_argv(self, host: multihost.Host, index: int) -> tuple[list[str], dict[str, str] | None]: ...

    def form(self, t0: float) -> dict[str, float]:
        """``swarm init`` on the first manager, the other managers joined one at a time (each
        is a Raft membership change), the workers all at once; seconds from ``t0`` to each."""
        first, addr = self.managers[0], self.manager_addr()
        self.swarm_cli(first, "init", "--advertise-addr", addr)
        steps = {"init_s": time.monotonic() - t0}
        manager_token = self.swarm_cli(first, "join-token", "-q", "manager").strip()
        worker_token = self.swarm_cli(first, "join-token", "-q", "worker").strip()
        for host in self.managers[1:]:
            self.swarm_cli(host, "join", "--token", manager_token, addr)
        steps["managers_joined_s"] = time.monotonic() - t0
        in_parallel(
            [lambda h=h: self.swarm_cli(h, "join", "--token", worker_token, addr) for h in self.workers]
        )
        steps["workers_joined_s"] = time.monotonic() - t0
        return {key: round(value, 2) for key, value in steps.items()}

    def containers(self, host: multihost.Host, service: str, running_only: bool) -> int:
        """Containers of ``service`` on the host's engine (running ones, or all)."""
        args = ["ps", "-q"] if running_only else ["ps", "-aq"]
        out = host.engine_cli(*args, "--filter", f"label={self.label}={service}", timeout=60)
        return len(out.split())

    def no_containers_left(self, service: str) -> bool:
        alive = [h for h in self.hosts if h.name not in self.dead]
        counts = in_parallel([lambda h=h: self.containers(h, service, False) for h in alive])
        return sum(counts) == 0

    def close(self) -> None:
        """Untimed cleanup before the hosts go (a killed engine is back by then)."""


class SwarmSide(Side):
    name = "swarm"
    label = SWARM_LABEL

    def __init__(self, hosts: multihost.Cluster, managers: int) -> None:
        super().__init__(hosts, managers)
        self.ids: dict[str, str] = {}
        self.image = ""

    def docker(self, host: multihost.Host, *args: str, timeout: float = 120) -> str:
        return host.engine_cli(*args, timeout=timeout)

    def prepare(self) -> None:
        first = self.hosts[0]
        self.image = self.docker(first, "image", "inspect", IMAGE, "--format", "{{.Id}}").strip()

    def swarm_cli(self, host: multihost.Host, *args: str) -> str:
        return self.docker(host, "swarm", *args)

    def manager_addr(self) -> str:
        return f"{self.managers[0].ip}:2377"

    def node_rows(self, via: multihost.Host) -> list[list[str]]:
        out = via.engine_cli(
            "node", "ls", "--format", "{{.ID}}|{{.Status}}|{{.ManagerStatus}}", check=False, timeout=60
        )
        return [line.split("|") for line in out.splitlines() if line]

    def all_ready(self) -> bool:
        rows = self.node_rows(self.managers[0])
        ready = [r for r in rows if r[1] == "Ready"]
        managers = [r for r in rows if r[2] in ("Leader", "Reachable")]
        return len(ready) == len(self.hosts) and len(managers) == len(self.managers)

    def node_id(self, host: multihost.Host) -> str:
        if host.name not in self.ids:
            self.ids[host.name] = self.docker(host, "info", "--format", "{{.Swarm.NodeID}}").strip()
        return self.ids[host.name]

    def via(self) -> multihost.Host:
        return next(h for h in self.managers if h.name not in self.dead)

    def create(self, service: str, replicas: int) -> None:
        self.docker(
            self.via(), "service", "create", "--detach", "--no-resolve-image", "--name", service,
            "--replicas", str(replicas), *FAST_STOP, self.image, *COMMAND,
        )  # fmt: skip

    def scale(self, service: str, replicas: int) -> None:
        self.docker(self.via(), "service", "scale", "--detach", f"{service}={replicas}")

    def availability(self, host: multihost.Host, value: str) -> None:
        self.docker(self.via(), "node", "update", "--availability", value, self.node_id(host))

    def remove(self, service: str) -> None:
        self.docker(self.via(), "service", "rm", service)

    def running(self, service: str) -> int:
        out = self.via().engine_cli(
            "service",
            "ps",
            service,
            "--format",
            "{{.DesiredState}} {{.CurrentState}}",
            check=False,
            timeout=60,
        )
        return sum(1 for line in out.splitlines() if line.startswith("Running Running"))

    def leader(self) -> multihost.Host:
        for row in self.node_rows(self.via()):
            if row[2] == "Leader":
                return next(h for h in self.managers if self.node_id(h) == row[0])
        raise RuntimeError("swarm: no leader in node ls")

    def leader_pid(self, host: multihost.Host) -> int:
        assert host.engine.proc is not None
        return host.engine.proc.pid

    def kill(self, host: multihost.Host) -> None:
        os.kill(self.leader_pid(host), signal.SIGKILL)  # dockerd only: its containerd lives on
        assert host.engine.proc is not None
        host.engine.proc.wait(10)
        self.dead.add(host.name)

    def probe_argv(self, host: multihost.Host, index: int) -> tuple[list[str], dict[str, str] | None]:
        argv = [
            *host.engine_client(), "service", "create", "--detach", "--no-resolve-image",
            "--name", f"probe{index}", "--replicas", "0", self.image, *COMMAND,
        ]  # fmt: skip
        return argv, None

    def close(self) -> None:
        """A killed dockerd is started again (it re-attaches to its containerd), so that the
        teardown can remove its containers through it instead of orphaning them."""
        for host in self.hosts:
            if host.name in self.dead:
                host.engine.start(self.cluster.undo)
                self.dead.discard(host.name)


class ShoalSide(Side):
    name = "shoal"
    label = SHOAL_LABEL

    def prepare(self) -> None:
        """A daemon on every host, started before the clock as dockerd is for Swarm."""
        for host in self.hosts:
            node = ShoalNode(
                self.cluster.base / "shoal",
                name=host.name,
                runtime="docker",
                host=host.ip,
                port=multihost.SHOAL_PORT,
                wrapper=multihost.in_netns(host.netns),
                env_extra=host.engine.env(),
            )
            host.node = node
            self.cluster.undo.push(f"stop shoal on {host.name}", node.kill)
        in_parallel([lambda h=h: h.shoal().start() for h in self.hosts])

    def cli(self, host: multihost.Host, *args: str, timeout: float = 120) -> str:
        return host.shoal().ok(*args, timeout=timeout).stdout

    def client(self, host: multihost.Host) -> Client:
        return Client(f"unix://{host.shoal().socket}", timeout=60)

    def swarm_cli(self, host: multihost.Host, *args: str) -> str:
        return self.cli(host, "swarm", *args)

    def manager_addr(self) -> str:
        return self.managers[0].shoal().addr

    def via(self) -> multihost.Host:
        return next(h for h in self.managers if h.name not in self.dead)

    def node_rows(self) -> list[dict[str, Any]]:
        result = self.via().shoal().cli("node", "ls", "--format", "json", timeout=60)
        return result.json_lines() if result.returncode == 0 else []

    def all_ready(self) -> bool:
        rows = self.node_rows()
        ready = [r for r in rows if r.get("Status") == "Ready"]
        managers = [r for r in rows if r.get("ManagerStatus") in ("Leader", "Reachable")]
        return len(ready) == len(self.hosts) and len(managers) == len(self.managers)

    def create(self, service: str, replicas: int) -> None:
        self.cli(
            self.via(), "service", "create", "--detach", "--name", service, "--replicas", str(replicas),
            *FAST_STOP, IMAGE, *COMMAND,
        )  # fmt: skip

    def scale(self, service: str, replicas: int) -> None:
        self.cli(self.via(), "service", "scale", "--detach", f"{service}={replicas}")

    def availability(self, host: multihost.Host, value: str) -> None:
        self.cli(self.via(), "node", "update", "--availability", value, host.name)

    def remove(self, service: str) -> None:
        self.cli(self.via(), "service", "rm", service)

    def running(self, service: str) -> int:
        try:
            tasks = self.client(self.via()).call("service.ps", services=[service])["tasks"]
        except ClientError:
            return 0
        return sum(1 for t in tasks if t["DesiredState"] == "Running" and t["State"] == "Running")

    def leader(self) -> multihost.Host:
        for row in self.node_rows():
            if row.get("ManagerStatus") == "Leader":
                return next(h for h in self.managers if h.name == row.get("Hostname"))
        raise RuntimeError("shoal: no leader in node ls")

    def leader_pid(self, host: multihost.Host) -> int:
        proc = host.shoal().proc
        assert proc is not None
        return proc.pid

    def kill(self, host: multihost.Host) -> None:
        host.shoal().kill()
        self.dead.add(host.name)

    def probe_argv(self, host: multihost.Host, index: int) -> tuple[list[str], dict[str, str] | None]:
        argv = [
            *SHOAL, "service", "create", "--detach", "--name", f"probe{index}", "--replicas", "0",
            IMAGE, *COMMAND,
        ]  # fmt: skip
        return argv, host.shoal().env()

    def sessions_back(self, sizes: dict[str, int]) -> bool:
        """Every surviving node's agent logged a session opened after the kill."""
        for host in self.hosts:
            if host.name in self.dead:
                continue
            log = host.shoal().log
            with open(log, "rb") as fh:
                fh.seek(sizes[host.name])
                if not SESSION_OPEN.search(fh.read().decode(errors="replace")):
                    return False
        return True


# ---------------------------------------------------------------------- failover probes


class Probes:
    """A write (``service create`` of 0 replicas) started every ``period`` s through the
    surviving managers in turn, each its own CLI process, at most ``cap`` in flight."""

    def __init__(self, side: Side, t0: float, period: float = 0.25, cap: int = 40) -> None:
        self.side, self.t0, self.period = side, t0, period
        self.inflight = threading.Semaphore(cap)
        self.first_ok: float | None = None
        self.failures: dict[str, int] = {}
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def _one(self, host: multihost.Host, index: int) -> None:
        argv, env = self.side.probe_argv(host, index)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
            ok, why = proc.returncode == 0, (proc.stderr.strip().splitlines() or [""])[-1][:100]
        except subprocess.TimeoutExpired:
            ok, why = False, "no answer in 30 s"
        end = time.monotonic()
        with self.lock:
            if ok and (self.first_ok is None or end < self.first_ok):
                self.first_ok = end
            elif not ok:
                self.failures[why] = self.failures.get(why, 0) + 1
        self.inflight.release()

    def run(self, timeout: float = 120) -> float:
        survivors = [h for h in self.side.managers if h.name not in self.side.dead]
        deadline = time.monotonic() + timeout
        index = 0
        while self.first_ok is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.side.name}: no write accepted {timeout:.0f} s after the kill")
            if self.inflight.acquire(timeout=self.period):
                host = survivors[index % len(survivors)]
                thread = threading.Thread(target=self._one, args=(host, index), daemon=True)
                thread.start()
                self.threads.append(thread)
                index += 1
                time.sleep(self.period)
        for thread in self.threads:
            thread.join(40)
        return self.first_ok - self.t0


# ---------------------------------------------------------------------- one side's run


def keep_logs(hosts: multihost.Cluster, into: Path) -> None:
    """The daemons' and engines' logs of a side, copied before its teardown removes them."""
    into.mkdir(parents=True, exist_ok=True)
    for host in hosts.hosts:
        for log in (host.engine.log_path, host.node.log if host.node else None):
            if log is not None and log.exists():
                shutil.copy(log, into / f"{host.name}-{log.name}")


def run_side(kind: str, args: argparse.Namespace, phases: list[Phase]) -> None:
    hosts = multihost.Cluster(args.managers + args.workers, "docker", images=(IMAGE,))
    try:
        began = time.monotonic()
        hosts.up()
        print(
            f"[{kind}] {len(hosts.hosts)} hosts up in {time.monotonic() - began:.1f} s ({hosts.base})",
            flush=True,
        )
        side: Side = SwarmSide(hosts, args.managers) if kind == "swarm" else ShoalSide(hosts, args.managers)
        side.prepare()
        pids = {h.name: side.leader_pid(h) for h in side.managers}

        def end_leader(phase: Phase) -> None:
            """The phase reports the leader at its end (leadership may move under load)."""
            now = side.leader().name
            if now != phase.extra["leader"]:
                phase.extra["leader_changed_from"] = phase.extra["leader"]
            phase.extra["leader"] = now

        with measured(kind, f"ready ({len(hosts.hosts)} nodes)", pids, phases) as phase:
            t0 = time.monotonic()
            phase.extra.update(side.form(t0))
            phase.seconds = poll(side.all_ready, "every node Ready") - t0
        drained = side.workers[-1]
        for n in args.sizes:
            service = f"s{n}"
            pids = dict(sorted(pids.items(), key=lambda item: item[0] != side.leader().name))
            with measured(kind, f"create {n}", pids, phases) as phase:
                t0 = time.monotonic()
                side.create(service, n)
                phase.seconds = poll(lambda s=service, n=n: side.running(s) == n, f"{n} running") - t0
                end_leader(phase)
            with measured(kind, f"scale {n} -> {2 * n}", pids, phases) as phase:
                t0 = time.monotonic()
                side.scale(service, 2 * n)
                phase.seconds = poll(lambda s=service, n=n: side.running(s) == 2 * n, f"{2 * n} running") - t0
                end_leader(phase)
            with measured(kind, f"drain 1 worker ({2 * n} replicas)", pids, phases) as phase:
                phase.extra["moved"] = side.containers(drained, service, True)
                t0 = time.monotonic()
                side.availability(drained, "drain")

                def drained_and_running(s: str = service, n: int = n) -> bool:
                    return side.containers(drained, s, True) == 0 and side.running(s) == 2 * n

                phase.seconds = poll(drained_and_running, "drain") - t0
                end_leader(phase)
            with measured(kind, f"rm ({2 * n} replicas)", pids, phases) as phase:
                t0 = time.monotonic()
                side.remove(service)
                phase.seconds = poll(lambda s=service: side.no_containers_left(s), "no container left") - t0
                end_leader(phase)
            side.availability(drained, "active")
        n = min(args.sizes)
        side.create("steady", n)
        poll(lambda: side.running("steady") == n, f"{n} running before the failover")
        leader = side.leader()
        pids = dict(sorted(pids.items(), key=lambda item: item[0] != leader.name))
        sizes = {h.name: h.shoal().log.stat().st_size for h in hosts.hosts} if kind == "shoal" else {}
        with measured(kind, f"failover ({n} replicas)", pids, phases) as phase:
            t0 = time.monotonic()
            side.kill(leader)
            phase.seconds = Probes(side, t0).run()
            if isinstance(side, ShoalSide):
                phase.extra["sessions_back_s"] = round(
                    poll(lambda: side.sessions_back(sizes), "every session back", 120) - t0, 2
                )
            phase.extra["leader"] = wait_until(side.leader, 60, 0.5, "a new leader").name
        side.close()
    finally:
        if args.logs:
            keep_logs(hosts, args.logs / f"{kind}-{time.strftime('%H%M%S')}")
        began = time.monotonic()
        hosts.down()
        print(f"[{kind}] torn down in {time.monotonic() - began:.1f} s", flush=True)


# ---------------------------------------------------------------------- report


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def table(phases: list[Phase]) -> str:
    names = list(dict.fromkeys(p.name for p in phases))
    lines = [
        "| phase | shoal s | Swarm s | shoal / Swarm | leader CPU % shoal / Swarm | leader peak RSS MiB shoal / Swarm |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        of = {side: [p for p in phases if p.name == name and p.side == side] for side in ("shoal", "swarm")}
        secs = {side: [p.seconds for p in of[side]] for side in of}
        ratio = (
            f"{statistics.median(secs['shoal']) / statistics.median(secs['swarm']):.2f}"
            if secs["shoal"] and secs["swarm"]
            else "-"
        )
        cpu = " / ".join(
            f"{statistics.median(p.cpu_percent for p in of[s]):.0f}" if of[s] else "-" for s in of
        )
        rss = " / ".join(f"{max(p.peak_rss_mib for p in of[s]):.0f}" if of[s] else "-" for s in of)
        extra = ""
        backs = [p.extra["sessions_back_s"] for p in of["shoal"] if "sessions_back_s" in p.extra]
        if backs:
            extra = f" (every session back {summary(backs)})"
        lines.append(
            f"| {name} | {summary(secs['shoal'])}{extra} | {summary(secs['swarm'])} | {ratio} | {cpu} | {rss} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--managers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--replicas", default="20,100", help="comma-separated N (each also scaled to 2N)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both sides, alternating first")
    parser.add_argument("--sides", default="swarm,shoal", help="the first round's order")
    parser.add_argument("--json", type=Path, help="write the phases here")
    parser.add_argument("--logs", type=Path, help="keep each side's daemon and engine logs here")
    args = parser.parse_args()
    args.sizes = [int(n) for n in args.replicas.split(",")]
    if args.managers < 1 or args.workers < 1:
        parser.error("--managers and --workers must be at least 1")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # run the teardowns
    os.environ["DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"] = "1"  # read by the hosts' dockerd
    order = args.sides.split(",")
    phases: list[Phase] = []
    started = time.time()
    print(
        f"bench_swarm_scale: {args.managers} managers + {args.workers} workers, N = {args.sizes}, "
        f"{args.rounds} round(s), {os.cpu_count()} CPUs, load {os.getloadavg()}",
        flush=True,
    )
    try:
        for round_index in range(args.rounds):
            for kind in order if round_index % 2 == 0 else list(reversed(order)):
                run_side(kind, args, phases)
    finally:
        print()
        print(table(phases))
        print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                        "seconds": round(time.time() - started, 1),
                        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                        "managers": args.managers,
                        "workers": args.workers,
                        "sizes": args.sizes,
                        "phases": [p.__dict__ for p in phases],
                    },
                    indent=1,
                )
            )


if __name__ == "__main__":
    main()
