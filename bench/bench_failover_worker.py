"""Worker loss and drain: seconds until the worker's tasks run elsewhere (1 manager + 2 workers).

Scenarios, timed like shared/reference/swarm-anchor-on-this-machine.md (clock starts just before
the action, stops at the end of the first poll that shows the target state):

- ``kill``: ``kill -9`` of a worker daemon -> all N replicas Running, none on that worker. The
  heartbeat period is Swarm's default (5 s), so detection takes about 3 periods (15 s), as in
  Swarm; ``--heartbeat 1s`` shows what a shorter period buys.
- ``drain``: ``node update --availability drain`` of a worker -> N Running, none on it. With
  Swarm's default 10 s stop grace (``sleep`` ignores SIGTERM) and with ``--stop-grace-period 0s``.

Every node is a real ``shoal daemon`` on its own loopback address sharing the local dockerd;
the agents talk to the manager over gRPC with mutual TLS.

    .venv/bin/python bench/bench_failover_worker.py [--reps 3] [--replicas 8] [--heartbeat 5s]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shoal.client import Client, ClientError

IMAGE = "shoal-busybox:1"


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class Node:
    def __init__(self, base: Path, name: str, host: str) -> None:
        self.name = name
        self.host = host
        self.port = free_port(host)
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.sock = self.dir / "shoal.sock"
        self.client = Client(f"unix://{self.sock}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        log = open(self.dir / "daemon.log", "ab")
        env = {k: v for k, v in os.environ.items() if k != "SHOAL_PLUGINS"}
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
                self.addr,
                "--hostname",
                self.name,
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.call("info")
                return
            except ClientError:
                if time.monotonic() > deadline:
                    sys.exit(f"daemon {self.name} did not start (see {self.dir / 'daemon.log'})")
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class Cluster:
    def __init__(self, heartbeat: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="shoal-bench-failover-"))
        self.manager = Node(self.base, "mgr", "127.0.0.1")
        self.manager.client.call("swarm.init", advertise_addr=self.manager.addr)
        self.manager.client.call("swarm.update", dispatcher_heartbeat=heartbeat)
        token = self.manager.client.call("swarm.join_token", role="worker")["Token"]
        self.workers = [Node(self.base, f"w{i}", f"127.0.0.{i + 1}") for i in (1, 2)]
        for worker in self.workers:
            worker.client.call("swarm.join", token=token, remote_addr=self.manager.addr)
        self.wait(lambda: all(n["Status"] == "Ready" for n in self.manager.client.call("node.ls")), 30)
        # Tasks run on the workers only, so that losing one moves its tasks to the other.
        self.manager.client.call("node.update", node="mgr", availability="drain")

    def wait(self, condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            time.sleep(0.05)

    def running(self, service: str) -> list[dict[str, str]]:
        tasks = self.manager.client.call("service.ps", services=[service])["tasks"]
        return [t for t in tasks if t["DesiredState"] == "Running" and t["State"] == "Running"]

    def close(self) -> None:
        for node in [*self.workers, self.manager]:
            node.stop()
        subprocess.run(
            [
                "docker",
                "rm",
                "-f",
                *subprocess.run(
                    ["docker", "ps", "-aq", "--filter", "label=io.shoal.service.name=failover"],
                    capture_output=True,
                    text=True,
                ).stdout.split(),
            ],
            capture_output=True,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def scenario(kind: str, replicas: int, grace: str, heartbeat: str) -> float:
    cluster = Cluster(heartbeat)
    try:
        cluster.manager.client.call(
            "service.create",
            name="failover",
            image=IMAGE,
            replicas=replicas,
            stop_grace_period=grace,
            restart_delay="5s",
        )
        cluster.wait(lambda: len(cluster.running("failover")) == replicas, 120)
        victim = cluster.workers[1]
        start = time.monotonic()
        if kind == "kill":
            victim.kill()
        else:
            cluster.manager.client.call("node.update", node=victim.name, availability="drain")
        cluster.wait(
            lambda: (
                (tasks := cluster.running("failover"))
                and len(tasks) == replicas
                and all(t["Node"] != victim.name for t in tasks)
            ),
            180,
        )
        return time.monotonic() - start
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--heartbeat", default="5s")
    args = parser.parse_args()
    rows = [
        ("kill -9 worker", "kill", "10s"),
        ("drain worker (10s stop grace)", "drain", "10s"),
        ("drain worker (0s stop grace)", "drain", "0s"),
    ]
    print(f"| scenario ({args.replicas} replicas, heartbeat {args.heartbeat}) | seconds, median (min-max) |")
    print("|---|---|")
    for label, kind, grace in rows:
        values = [scenario(kind, args.replicas, grace, args.heartbeat) for _ in range(args.reps)]
        print(
            f"| {label} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |", flush=True
        )
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
