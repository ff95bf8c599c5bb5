"""End to end: ``service create --replicas N`` until N tasks run, shoal beside Docker Swarm mode.

Method (as in shared/reference/swarm-anchor-on-this-machine.md): the clock starts just before
the CLI command that creates the service and stops at the end of the first poll that shows
exactly N tasks desired Running and currently Running. Both sides use the same local image by
ID (so nothing is pulled), ``sleep 3600`` as the command, and the same dockerd; Swarm runs in
the same process run, right after shoal, so the ratio is taken under the same machine load.

shoal is polled through its client library over the daemon's socket (one call takes a few ms);
Swarm through ``docker service ps`` (40-70 ms here), as the anchor did. The create command is a
real ``shoal service create --detach`` process on shoal's side, so CLI start-up is counted.

    .venv/bin/python bench/bench_e2e.py [--runtime docker|podman|both] [--sizes 4,20,50]
                                        [--reps 3] [--no-swarm]
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
from pathlib import Path

from shoal.client import Client, ClientError

IMAGE = "shoal-busybox:1"
POLL_SLEEP = 0.05


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

    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        self.dir = Path(tempfile.mkdtemp(prefix=f"shoal-bench-{runtime}-"))
        self.sock = self.dir / "shoal.sock"
        self.env = {**os.environ, "SHOAL_HOST": f"unix://{self.sock}"}
        self.env.pop("SHOAL_PLUGINS", None)
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

    def create(self, name: str, replicas: int, image: str) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "shoal.cli.main",
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

    def running(self, name: str) -> int:
        tasks = self.client.call("service.ps", services=[name])["tasks"]
        return sum(1 for t in tasks if t["DesiredState"] == "Running" and t["State"] == "Running")

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


def time_create(side: ShoalSide | SwarmSide, name: str, replicas: int, image: str) -> float:
    start = time.monotonic()
    side.create(name, replicas, image)
    deadline = start + 300
    while side.running(name) != replicas:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: {replicas} tasks not running within 300 s")
        time.sleep(POLL_SLEEP)
    return time.monotonic() - start


def run(
    side: ShoalSide | SwarmSide, label: str, sizes: list[int], reps: int, image: str
) -> dict[int, list[float]]:
    results: dict[int, list[float]] = {}
    for size in sizes:
        for rep in range(reps):
            name = f"b{size}r{rep}"
            seconds = time_create(side, name, size, image)
            results.setdefault(size, []).append(seconds)
            print(f"{label}: create {size} -> {seconds:.2f}s", flush=True)
            side.remove(name)
            side.wait_all_removed()
    return results


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", default="both", choices=["docker", "podman", "both"])
    parser.add_argument("--sizes", default="4,20,50")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-swarm", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runtimes = ["docker", "podman"] if args.runtime == "both" else [args.runtime]
    table: dict[str, dict[int, list[float]]] = {}
    for runtime in runtimes:
        side = ShoalSide(runtime)
        try:
            table[f"shoal ({runtime})"] = run(side, f"shoal/{runtime}", sizes, args.reps, image_id(runtime))
        finally:
            side.close()
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
            if label == "Docker Swarm mode":
                continue
            ratios = " | ".join(f"{statistics.median(results[s]) / swarm_med[s]:.2f}" for s in sizes)
            print(f"| {label} / Swarm | {ratios} |")
    print(f"\n1-minute load average at the end: {load:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps({k: {str(s): v for s, v in r.items()} for k, r in table.items()}, indent=2)
        )


if __name__ == "__main__":
    main()
