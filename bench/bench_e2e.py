"""End to end: ``service create --replicas N`` until N tasks run, shoal beside Docker Swarm mode.

Method (as in shared/reference/swarm-anchor-on-this-machine.md): the clock starts just before
the CLI command that creates the service and stops at the end of the first poll that shows
exactly N tasks desired Running and currently Running. Both sides use the same local image by
ID (so nothing is pulled), ``sleep 3600`` as the command, and the same dockerd; Swarm runs in
the same process run, right after shoal, so the ratio is taken under the same machine load.

shoal is polled through its client library over the daemon's socket (one call takes a few ms)
every ``poll_interval(N)``; Swarm through ``docker service ps`` (40-70 ms here), as the anchor did. The
create command is a real ``shoal service create --detach`` process (the console script) on shoal's side, so CLI
start-up is counted; how long that process ran is printed beside each figure (``CLI``) and as
its own row, so the share of the interpreter and the CLI in shoal's time is seen in every run.
A second shoal row stops the clock where the floor's stops, when the last container was seen
started: the latest ``Timestamp`` of the Running tasks (set by the agent as its ``start``
returned, same host clock), which leaves out the poll's resolution (up to ``poll_interval``)
and the status report's way to the store.

The engine's floor is measured in the same run, on each runtime: N containers of the same
image and command created and started straight through the engine's API (docker SDK,
podman-py), once with a thread pool as wide as the agent's engine gate on that runtime (what
shoal's node may ask at once: the runtime plugin's declared ``engine_concurrency``, else the
kernel's default, or ``--engine-calls``) and once all at once (N threads); ``--floor-widths``
adds pools of other widths (to choose a runtime's declaration). The clock runs from the first
create to the last start; the ratio shoal / floor is printed for each. Shoal and the floors take
turns, repetition by repetition (``run_alternating``), so each ratio compares times taken
under the same load; the rows ``per repetition`` give the median (min-max) of each
repetition's own ratio shoal / floor, and of shoal's time above that floor in ms.

    .venv/bin/python bench/bench_e2e.py [--runtime docker|podman|both] [--sizes 4,20,50]
                                        [--reps 3] [--no-swarm] [--no-floor]
                                        [--engine-calls N] [--floor-widths 16,32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shoal.agent.enginegate import engine_call_limit
from shoal.client import Client, ClientError
from shoal_runtime_docker.runtime import DockerRuntime
from shoal_runtime_podman.runtime import ULIMITS as PODMAN_ULIMITS
from shoal_runtime_podman.runtime import PodmanRuntime

RUNTIME_CLASSES: dict[str, type] = {"docker": DockerRuntime, "podman": PodmanRuntime}

IMAGE = "shoal-busybox:1"
#: Between two polls of shoal's tasks: 10 ms for a few tasks, up to 50 ms for many. The poll's
#: resolution is part of shoal's figure (the floor has none): a fixed 50 ms added 25 ms on
#: average, 6% of podman's floor at N = 4; but each poll (one ``service.ps`` of N tasks) costs
#: the daemon and the bench CPU that the engine needs, more for more tasks, while the floor's
#: time grows with N, so larger services are polled less often (under 1% of their floor).
#: The polls go over one kept connection (``ShoalSide.poller``): a poll then costs the daemon
#: and the bench about 0.25 ms of CPU instead of 0.45 ms (a connection accepted and served per
#: call), so polling every 5 ms at N = 4 costs what every 10 ms did, for half the resolution.
POLL_MIN, POLL_MAX, POLL_PER_TASK = 0.005, 0.05, 0.0025


#: The ``shoal`` command as users run it: the virtualenv's console script (``python -m
#: shoal.cli.main`` also loads runpy and importlib.util, 4-5 ms a process that ``shoal`` does
#: not spend), else the module when there is no script beside the interpreter.
_SCRIPT = Path(sys.executable).with_name("shoal")
SHOAL_CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "shoal.cli.main"]


def poll_interval(replicas: int) -> float:
    return min(POLL_MAX, max(POLL_MIN, POLL_PER_TASK * replicas))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def image_id(engine: str) -> str:
    cli = ["docker"] if engine == "docker" else ["podman"]
    out = subprocess.run(
        [*cli, "image", "inspect", IMAGE, "--format", "{{.Id}}"], capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit(f"{engine} has no {IMAGE}: run scripts/build-test-images.sh")
    value = out.stdout.strip()
    return value if value.startswith("sha256:") else f"sha256:{value}"


class ShoalSide:
    """A one-node shoal cluster on one runtime."""

    def __init__(self, runtime: str, engine_calls: int | None = None) -> None:
        self.runtime = runtime
        self.dir = Path(tempfile.mkdtemp(prefix=f"shoal-bench-{runtime}-"))
        self.sock = self.dir / "shoal.sock"
        self.env = {**os.environ, "SHOAL_HOST": f"unix://{self.sock}"}
        self.env.pop("SHOAL_PLUGINS", None)
        # As installed (pip writes bytecode): without a bytecode cache every CLI process
        # compiles its ~50 modules from source again (about 0.2 s at load on this machine).
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(self.dir / "pycache")
        port = free_port()
        self.log = open(self.dir / "daemon.log", "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shoal.cli.main",
                "daemon",
                "--state-dir",
                str(self.dir / "state"),
                "--socket",
                str(self.sock),
                "--listen-addr",
                f"127.0.0.1:{port}",
                "--plugin",
                f"runtime={runtime}",
                "--log-level",
                "warning",
                *(["--max-concurrent-engine-calls", str(engine_calls)] if engine_calls else []),
            ],
            stdout=self.log,
            stderr=self.log,
            env=self.env,
        )
        self.client = Client(f"unix://{self.sock}")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.call("info")
                break
            except ClientError:
                if time.monotonic() > deadline:
                    sys.exit(f"shoal daemon did not start: see {self.dir / 'daemon.log'}")
                time.sleep(0.05)
        self.client.call("swarm.init", advertise_addr=f"127.0.0.1:{port}")
        #: The polls of a create's tasks, over one connection kept open (see ``POLL_MIN``).
        self.poller = Client(f"unix://{self.sock}", keep_alive=True)
        #: How long each ``service create`` process ran (start to exit), in order.
        self.cli_seconds: list[float] = []
        #: From just before each ``service create`` to its last task's Running timestamp.
        self.started_seconds: list[float] = []

    def warm_up(self, image: str) -> None:
        """One untimed create of one task: the CLI's bytecode is written, the daemon's lazy
        imports and the engine's first container are behind us."""
        time_create(self, "warmup", 1, image)
        self.remove("warmup")
        self.wait_all_removed()

    def create(self, name: str, replicas: int, image: str) -> None:
        started = time.monotonic()
        subprocess.run(
            [
                *SHOAL_CLI,
                "service",
                "create",
                "--detach",
                "--name",
                name,
                "--replicas",
                str(replicas),
                "--stop-grace-period",
                "0s",
                image,
                "sleep",
                "3600",
            ],
            check=True,
            env=self.env,
            capture_output=True,
        )
        self.cli_seconds.append(time.monotonic() - started)

    def running(self, name: str) -> int:
        return len(self._running_tasks(name))

    def _running_tasks(self, name: str) -> list[dict[str, Any]]:
        tasks = self.poller.call("service.ps", services=[name])["tasks"]
        return [t for t in tasks if t["DesiredState"] == "Running" and t["State"] == "Running"]

    def last_started_at(self, name: str) -> float:
        """When the agent set the last of the service's tasks Running (host clock, seconds)."""
        return max(float(t["Timestamp"]) for t in self._running_tasks(name))

    def remove(self, name: str) -> None:
        self.client.call("service.rm", services=[name])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if not self.client.call("service.ps", services=[name])["tasks"]:
                    return
            except ClientError:
                return
            time.sleep(0.1)

    def wait_all_removed(self) -> None:
        deadline = time.monotonic() + 120
        engine = ["docker"] if self.runtime == "docker" else ["podman"]
        node_id = self.client.call("info")["NodeID"]
        while time.monotonic() < deadline:
            out = subprocess.run(
                [*engine, "ps", "-aq", "--filter", f"label=io.shoal.node.id={node_id}"],
                capture_output=True,
                text=True,
            )
            if not out.stdout.strip():
                return
            time.sleep(0.2)

    def close(self) -> None:
        self.poller.close()
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class SwarmSide:
    """Docker Swarm mode on the same dockerd (``docker swarm init``; left at the end)."""

    def __init__(self) -> None:
        subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
        subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], check=True, capture_output=True
        )

    def create(self, name: str, replicas: int, image: str) -> None:
        subprocess.run(
            [
                "docker",
                "service",
                "create",
                "--detach",
                "--no-resolve-image",
                "--name",
                name,
                "--replicas",
                str(replicas),
                "--stop-grace-period",
                "0s",
                image,
                "sleep",
                "3600",
            ],
            check=True,
            capture_output=True,
        )

    def running(self, name: str) -> int:
        out = subprocess.run(
            ["docker", "service", "ps", name, "--format", "{{.DesiredState}} {{.CurrentState}}"],
            capture_output=True,
            text=True,
        )
        return sum(1 for line in out.stdout.splitlines() if line.startswith("Running Running"))

    def remove(self, name: str) -> None:
        subprocess.run(["docker", "service", "rm", name], capture_output=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}"],
                capture_output=True,
                text=True,
            )
            if not out.stdout.strip():
                return
            time.sleep(0.2)

    def wait_all_removed(self) -> None:
        return

    def close(self) -> None:
        subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)


class FloorSide:
    """The engine alone: N containers created and started through its API by ``width`` threads."""

    def __init__(self, runtime: str, width: int | None) -> None:
        self.runtime = runtime
        self.width = width
        self.client: Any
        if runtime == "docker":
            import docker

            self.client = docker.APIClient(base_url="unix:///var/run/docker.sock", timeout=120)
        else:
            import podman

            self.client = podman.PodmanClient(base_url="unix:///run/podman/podman.sock", timeout=120)
        self.names: list[str] = []
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """The containers an interrupted run of this bench left (its label), so names are free."""
        engine = ["docker"] if self.runtime == "docker" else ["podman"]
        listed = subprocess.run(
            [*engine, "ps", "-aq", "--filter", "label=io.shoal.bench.floor=1"], capture_output=True, text=True
        )
        if listed.stdout.split():
            subprocess.run([*engine, "rm", "-f", *listed.stdout.split()], capture_output=True)

    def _create_start(self, name: str, image: str) -> None:
        labels = {"io.shoal.bench.floor": "1"}
        if self.runtime == "docker":
            self.client.create_container(image, name=name, command=["sleep", "3600"], labels=labels)
            self.client.start(name)
        else:  # libpod's API as shoal's podman runtime sends it (its explicit ulimits too)
            body: dict[str, Any] = {
                "name": name,
                "image": image,
                "command": ["sleep", "3600"],
                "labels": labels,
            }
            body["r_limits"] = PODMAN_ULIMITS
            created = self.client.api.post("/containers/create", data=json.dumps(body))
            created.raise_for_status()
            self.client.api.post(f"/containers/{name}/start").raise_for_status()

    def time_create(self, name: str, replicas: int, image: str) -> float:
        self.names = [f"{name}-{i}" for i in range(replicas)]
        width = self.width or replicas
        with ThreadPoolExecutor(max_workers=width) as pool:
            start = time.monotonic()
            for future in [pool.submit(self._create_start, n, image) for n in self.names]:
                future.result()
            return time.monotonic() - start

    def remove(self, name: str) -> None:
        del name
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self._remove_one, self.names))
        self.names = []

    def _remove_one(self, name: str) -> None:
        if self.runtime == "docker":
            self.client.remove_container(name, force=True)
        else:  # timeout 0: kill at once (``sleep`` as PID 1 ignores SIGTERM: 10 s a batch otherwise)
            self.client.api.delete(
                f"/containers/{name}", params={"force": True, "timeout": 0}
            ).raise_for_status()

    def wait_all_removed(self) -> None:
        return

    def warm_up(self, image: str) -> None:
        """One untimed container, as shoal's side gets."""
        self.time_create("floor-warmup", 1, image)
        self.remove("floor-warmup")

    def close(self) -> None:
        self.client.close()


Side = ShoalSide | SwarmSide | FloorSide


def time_create(side: Side, name: str, replicas: int, image: str) -> float:
    if isinstance(side, FloorSide):
        return side.time_create(name, replicas, image)
    start, wall_start = time.monotonic(), time.time()
    side.create(name, replicas, image)
    deadline = start + 300
    while side.running(name) != replicas:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: {replicas} tasks not running within 300 s")
        time.sleep(poll_interval(replicas))
    seconds = time.monotonic() - start
    if isinstance(side, ShoalSide):
        side.started_seconds.append(side.last_started_at(name) - wall_start)
    return seconds


def run(
    side: Side,
    label: str,
    sizes: list[int],
    reps: int,
    image: str,
    cli: dict[int, list[float]] | None = None,
    started: dict[int, list[float]] | None = None,
) -> dict[int, list[float]]:
    """Time every size ``reps`` times; a ``ShoalSide``'s CLI process times go into ``cli``, its
    times to the last task's Running timestamp into ``started``."""
    return run_alternating([(side, label)], sizes, reps, image, cli, started)[label]


def run_alternating(
    sides: list[tuple[Side, str]],
    sizes: list[int],
    reps: int,
    image: str,
    cli: dict[int, list[float]] | None = None,
    started: dict[int, list[float]] | None = None,
) -> dict[str, dict[int, list[float]]]:
    """Each repetition of each size on every side in turn, results by label. Shoal and the
    floors it is compared with are timed under the same load this way: on a shared machine,
    sides timed minutes apart differed by more than shoal's own overhead (docs/benchmarks.md,
    2026-12-07, podman 1.3-1.5x timed apart, 1.07-1.26x alternating)."""
    results: dict[str, dict[int, list[float]]] = {label: {} for _, label in sides}
    for side, _ in sides:
        if not isinstance(side, SwarmSide):
            side.warm_up(image)
    for size in sizes:
        for rep in range(reps):
            name = f"b{size}r{rep}"
            for side, label in sides:
                seconds = time_create(side, name, size, image)
                results[label].setdefault(size, []).append(seconds)
                note = ""
                if isinstance(side, ShoalSide):
                    note = f" (CLI {side.cli_seconds[-1]:.2f}s, last started {side.started_seconds[-1]:.2f}s)"
                    if cli is not None:
                        cli.setdefault(size, []).append(side.cli_seconds[-1])
                    if started is not None:
                        started.setdefault(size, []).append(side.started_seconds[-1])
                print(f"{label}: create {size} -> {seconds:.2f}s{note}", flush=True)
                side.remove(name)
                side.wait_all_removed()
    return results


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def pair_summary(shoal: list[float], floor: list[float]) -> str:
    """Each repetition's shoal time over the floor's of the same repetition (timed one right
    after the other): median (min-max) of those ratios, and of shoal's time above the floor's
    in ms. podman's floor at N = 4 moved between 0.34 and 0.70 s within minutes on this
    machine, so a ratio of two medians taken over several minutes mixes loads; a ratio per
    pair compares times taken under (about) the same one."""
    ratios = [s / f for s, f in zip(shoal, floor, strict=True)]
    above = [(s - f) * 1000 for s, f in zip(shoal, floor, strict=True)]
    return (
        f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}); "
        f"{statistics.median(above):+.0f} ms ({min(above):+.0f} to {max(above):+.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", default="both", choices=["docker", "podman", "both"])
    parser.add_argument("--sizes", default="4,20,50")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-swarm", action="store_true")
    parser.add_argument("--no-floor", action="store_true", help="skip the engine's floor")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    parser.add_argument(
        "--engine-calls",
        type=int,
        default=None,
        help="shoal's --max-concurrent-engine-calls (default: its own)",
    )
    parser.add_argument(
        "--floor-widths", default="", help="also time the floor with pools this wide, e.g. 16,32"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runtimes = ["docker", "podman"] if args.runtime == "both" else [args.runtime]
    table: dict[str, dict[int, list[float]]] = {}
    floor_kinds: dict[str, list[str]] = {}
    for runtime in runtimes:
        cli: dict[int, list[float]] = {}
        started: dict[int, list[float]] = {}
        sides: list[tuple[Side, str]] = []
        try:
            sides.append((ShoalSide(runtime, args.engine_calls), f"shoal ({runtime})"))
            if not args.no_floor:  # timed in turn with shoal, repetition by repetition
                gate = engine_call_limit(RUNTIME_CLASSES[runtime], args.engine_calls)
                widths: list[tuple[int | None, str]] = [(gate, f"gate, {gate} wide")]
                widths += [
                    (int(w), f"{w} wide") for w in args.floor_widths.split(",") if w and int(w) != gate
                ]
                widths.append((None, "all at once"))
                floor_kinds[runtime] = [what for _, what in widths]
                sides += [(FloorSide(runtime, width), f"floor {runtime} ({what})") for width, what in widths]
            table.update(run_alternating(sides, sizes, args.reps, image_id(runtime), cli, started))
        finally:
            for side, _ in sides:
                side.close()
        table[f"shoal ({runtime}): of which the CLI process"] = cli
        table[f"shoal ({runtime}) to the last task started"] = started
    if not args.no_swarm:
        swarm = SwarmSide()
        try:
            table["Docker Swarm mode"] = run(swarm, "swarm", sizes, args.reps, image_id("docker"))
        finally:
            swarm.close()
    load = os.getloadavg()[0]
    print()
    print("| system | " + " | ".join(f"create {s} (s)" for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for label, results in table.items():
        print(f"| {label} | " + " | ".join(summary(results[s]) for s in sizes) + " |")
    if "Docker Swarm mode" in table:
        swarm_med = {s: statistics.median(table["Docker Swarm mode"][s]) for s in sizes}
        for label, results in table.items():
            if label == "Docker Swarm mode" or "CLI process" in label or "last task started" in label:
                continue
            ratios = " | ".join(f"{statistics.median(results[s]) / swarm_med[s]:.2f}" for s in sizes)
            print(f"| {label} / Swarm | {ratios} |")
    for runtime in runtimes:
        for shoal_label in (f"shoal ({runtime})", f"shoal ({runtime}) to the last task started"):
            for what in floor_kinds.get(runtime, []):
                floor_label = f"floor {runtime} ({what})"
                if shoal_label in table and floor_label in table:
                    ratios = " | ".join(
                        f"{statistics.median(table[shoal_label][s]) / statistics.median(table[floor_label][s]):.2f}"
                        for s in sizes
                    )
                    print(f"| {shoal_label} / {floor_label} | {ratios} |")
    for runtime in runtimes:
        for shoal_label in (f"shoal ({runtime})", f"shoal ({runtime}) to the last task started"):
            for what in floor_kinds.get(runtime, []):
                floor_label = f"floor {runtime} ({what})"
                if shoal_label in table and floor_label in table:
                    pairs = " | ".join(
                        pair_summary(table[shoal_label][s], table[floor_label][s]) for s in sizes
                    )
                    print(f"| {shoal_label} / {floor_label}, per repetition | {pairs} |")
    print(f"\n1-minute load average at the end: {load:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps({k: {str(s): v for s, v in r.items()} for k, r in table.items()}, indent=2)
        )


if __name__ == "__main__":
    main()
