"""Docker Swarm mode's side of bench_failover_worker.py: worker loss and drain, 1 manager + 2 workers.

Follows shared/reference/swarm-anchor-on-this-machine.md: every node is its own dockerd in its
own network namespace (a hub namespace holds a bridge; each node has a veth into it and an
address 10.213.8.1x/24 with no default route, so nothing can leave), started through
``nsenter --net`` (not ``ip netns exec``, which hides the cgroup mounts from dockerd) with its
own data root, exec root, socket and pid file, ``--iptables=false --bridge=none``. The test
image is copied into each with ``docker save | docker load`` so its ID is the same everywhere.

Timed like the shoal side: from just before ``kill -9`` of a worker's dockerd (or the
``node update --availability drain``) to the first poll showing all replicas Running on the
other worker.

    .venv/bin/python bench/bench_failover_swarm.py [--reps 3] [--replicas 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HUB = "sbh"
NODES = ("sbn1", "sbn2", "sbn3")  # manager, worker, worker
SUBNET = "10.213.8"
IMAGE = "shoal-busybox:1"


def sh(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


class Host:
    """One dockerd in its own network namespace."""

    def __init__(self, base: Path, name: str, index: int) -> None:
        self.name = name
        self.ip = f"{SUBNET}.{10 + index}"
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.sock = self.dir / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("docker", "-H", f"unix://{self.sock}", *args, check=check)

    def start(self) -> None:
        log = open(self.dir / "dockerd.log", "ab")  # the daemon's log, open while it runs
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/var/run/netns/{self.name}",
                "unshare",
                "--uts",
                "sh",
                "-c",
                f"hostname {self.name} && exec dockerd --iptables=false --bridge=none --data-root {self.dir}/data "
                f"--exec-root {self.dir}/exec -H unix://{self.sock} --pidfile {self.dir}/docker.pid "
                f"--config-file {self.dir}/daemon.json",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"dockerd {self.name} did not start: see {self.dir / 'dockerd.log'}")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def cleanup(self) -> None:
        self.kill()
        # dockerd's managed containerd and shims outlive a kill -9 (the anchor's pitfall).
        for pidfile in self.dir.glob("exec/**/*.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (ValueError, OSError):
                pass
        out = sh("pgrep", "-f", str(self.dir), check=False).stdout.split()
        for pid in out:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        sh("umount", "-R", str(self.dir / "data"), check=False)
        sh("umount", "-R", str(self.dir / "exec"), check=False)


class SwarmCluster:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
        self.hosts = [Host(self.base, name, i) for i, name in enumerate(NODES, start=1)]
        sh("ip", "netns", "add", HUB)
        sh("ip", "-n", HUB, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", HUB, "link", "set", "br0", "up")
        for index, host in enumerate(self.hosts, start=1):
            (host.dir / "daemon.json").write_text("{}")
            sh("ip", "netns", "add", host.name)
            sh("ip", "link", "add", f"sbv{index}", "type", "veth", "peer", "name", f"sbp{index}")
            sh("ip", "link", "set", f"sbv{index}", "netns", host.name)
            sh("ip", "link", "set", f"sbp{index}", "netns", HUB)
            sh("ip", "-n", HUB, "link", "set", f"sbp{index}", "master", "br0", "up")
            sh("ip", "-n", host.name, "addr", "add", f"{host.ip}/24", "dev", f"sbv{index}")
            sh("ip", "-n", host.name, "link", "set", f"sbv{index}", "up")
            sh("ip", "-n", host.name, "link", "set", "lo", "up")
        saved = self.base / "image.tar"
        sh("docker", "save", "-o", str(saved), IMAGE)
        for host in self.hosts:
            host.start()
            host.docker("load", "-i", str(saved))
        manager = self.hosts[0]
        manager.docker("swarm", "init", "--advertise-addr", manager.ip)
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        for host in self.hosts[1:]:
            host.docker("swarm", "join", "--token", token, f"{manager.ip}:2377")
        manager.docker("node", "update", "--availability", "drain", NODES[0])
        self.image = manager.docker("image", "inspect", IMAGE, "--format", "{{.Id}}").stdout.strip()

    def running_on(self) -> list[str]:
        out = (
            self.hosts[0]
            .docker(
                "service",
                "ps",
                "fo",
                "--format",
                "{{.DesiredState}}|{{.CurrentState}}|{{.Node}}",
                check=False,
            )
            .stdout.splitlines()
        )
        return [line.split("|")[2] for line in out if line.startswith("Running|Running")]

    def close(self) -> None:
        for host in self.hosts:
            host.cleanup()
        for name in (*NODES, HUB):
            sh("ip", "netns", "del", name, check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def scenario(kind: str, replicas: int, grace: str) -> float:
    cluster = SwarmCluster()
    try:
        cluster.hosts[0].docker(
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            "fo",
            "--replicas",
            str(replicas),
            "--stop-grace-period",
            grace,
            cluster.image,
            "sleep",
            "3600",
        )
        deadline = time.monotonic() + 180
        while len(cluster.running_on()) != replicas:
            if time.monotonic() > deadline:
                raise SystemExit("swarm: service did not start")
            time.sleep(0.1)
        victim = cluster.hosts[2]
        start = time.monotonic()
        if kind == "kill":
            victim.kill()
        else:
            cluster.hosts[0].docker("node", "update", "--availability", "drain", victim.name)
        deadline = start + 300
        while True:
            nodes = cluster.running_on()
            if len(nodes) == replicas and victim.name not in nodes:
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise SystemExit(f"swarm: {kind} did not converge")
            time.sleep(0.05)
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=8)
    args = parser.parse_args()
    rows = [
        ("kill -9 worker", "kill", "10s"),
        ("drain worker (10s stop grace)", "drain", "10s"),
        ("drain worker (0s stop grace)", "drain", "0s"),
    ]
    print(f"| Docker Swarm mode ({args.replicas} replicas, heartbeat 5s) | seconds, median (min-max) |")
    print("|---|---|")
    for label, kind, grace in rows:
        values = [scenario(kind, args.replicas, grace) for _ in range(args.reps)]
        print(
            f"| {label} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |", flush=True
        )
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
