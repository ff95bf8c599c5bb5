"""Several "hosts" on this one machine, each with its own network stack and container engine.

A host is a network namespace with its own dockerd (own ``--data-root``, ``--exec-root``,
``--pidfile`` and socket; or its own podman REST service with its own storage) and a
``shoal daemon`` started inside it with ``nsenter --net`` (``ip netns exec`` remounts /sys and
hides the cgroup tree dockerd needs; see ../shared/reference/swarm-anchor-on-this-machine.md).
The hosts are joined by a bridge in a namespace of the harness (the "underlay", 198.18.0.0/24:
a benchmarking range that collides neither with the overlay pool 10.0.0.0/8 nor with docker's
172.17.0.0/16), which also holds the address clients use (``Underlay.client_ip``): requests
from "outside" are made from that namespace (``Cluster.run_client``).

Nothing here touches the host's own namespace: no device, route or rule is added to it, and an
engine never runs outside its namespace (a dockerd in the host namespace would rewrite the
host's docker0). Teardown removes every process, namespace, directory and device it made, also
after a failure half-way through ``up`` (each step registers its undo before it runs).

Images are copied from the host's engine with ``docker save | load`` (podman: ``podman save |
load`` with the host's storage) so that they need no registry and have the same IDs everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import ShoalNode, terminate, wait_until

UNDERLAY_PREFIX = "198.18.0"
CLIENT_IP = f"{UNDERLAY_PREFIX}.1"
SHOAL_PORT = 2377
IMAGES = ("searchsvc:v1.0", "shoal-busybox:1")
ENGINE_START_TIMEOUT = 60.0


def run(*argv: str, check: bool = True, timeout: float = 60, input: bytes | None = None) -> str:
    """A command of the harness; its stderr in the failure message."""
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout.decode(errors="replace")


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def in_netns(name: str) -> list[str]:
    """Prefix that runs a command in the namespace's network stack only (not its mounts)."""
    return ["nsenter", f"--net={netns_path(name)}"]


class Undo:
    """What to undo at teardown, last made first; every step runs even if another fails."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, step: Callable[[], None]) -> None:
        self.steps.append((what, step))

    def run_all(self) -> list[str]:
        failures = []
        while self.steps:
            what, step = self.steps.pop()
            try:
                step()
            except Exception as exc:  # keep undoing the rest
                failures.append(f"{what}: {exc}")
        return failures


def mounts_below(path: Path) -> list[str]:
    """Mount points under ``path`` (podman's storage bind-mounts its overlay directory and
    leaves it mounted when its service stops), deepest first."""
    prefix = f"{path}/"
    with open("/proc/mounts") as table:
        points = [line.split()[1] for line in table if line.split()[1].startswith(prefix)]
    return sorted(points, key=len, reverse=True)


def unmount_below(path: Path) -> None:
    for point in mounts_below(path):
        run("umount", "-l", point, check=False)


@dataclass
class Engine:
    """One host's container engine, started inside its namespace."""

    kind: str  # "docker" | "podman"
    base: Path
    netns: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.base / f"{self.kind}.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """How a client (the runtime plugin, the CLI) reaches this engine."""
        return {"DOCKER_HOST": self.url} if self.kind == "docker" else {"CONTAINER_HOST": self.url}

    def argv(self) -> list[str]:
        if self.kind == "docker":
            return [
                *in_netns(self.netns),
                "dockerd",
                "--data-root", str(self.base / "data"),
                "--exec-root", str(self.base / "x"),
                "--pidfile", str(self.base / "docker.pid"),
                "--config-file", str(self.base / "daemon.json"),
                "-H", self.url,
                "--iptables=false",
                "--ip6tables=false",
            ]  # fmt: skip
        return [
            *in_netns(self.netns),
            "podman",
            *self.podman_storage(),
            "system", "service", "--time=0", self.url,
        ]  # fmt: skip

    def podman_storage(self) -> list[str]:
        return [
            "--root", str(self.base / "root"),
            "--runroot", str(self.base / "run"),
            "--tmpdir", str(self.base / "tmp"),
            "--cgroup-manager", "cgroupfs",
            "--runtime", "runc",
        ]  # fmt: skip

    def start(self, undo: Undo) -> None:
        (self.base / "daemon.json").write_text("{}\n")
        log = open(self.base / f"{self.kind}.log", "ab")
        env = dict(os.environ)
        if self.kind == "podman":
            env["CONTAINERS_CONF"] = str(self.podman_conf())
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()
        undo.push(f"stop {self.kind} of {self.netns}", self.stop)
        wait_until(
            self.ping, ENGINE_START_TIMEOUT, 0.2, f"{self.kind} in {self.netns} to answer ({self.log_path})"
        )

    def podman_conf(self) -> Path:
        """Podman's network state (netavark config, its bridge) kept in this host's dirs."""
        conf = self.base / "containers.conf"
        conf.write_text(
            "[network]\n"
            f'network_config_dir = "{self.base / "networks"}"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'runtime = "runc"\n'
            'events_logger = "file"\n'
        )
        return conf

    @property
    def log_path(self) -> Path:
        return self.base / f"{self.kind}.log"

    def ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.kind} in {self.netns} exited: {self.log_path.read_text()[-2000:]}")
        if not self.socket.exists():
            return False
        path = "/_ping" if self.kind == "docker" else "/v4.0.0/libpod/_ping"
        proc = subprocess.run(
            ["curl", "-sf", "--max-time", "2", "--unix-socket", str(self.socket), f"http://x{path}"],
            capture_output=True,
        )
        return proc.returncode == 0

    def load_images(self, archive: Path) -> None:
        if self.kind == "docker":
            run("docker", "-H", self.url, "load", "-i", str(archive), timeout=120)
        else:
            run("podman", "--url", self.url, "load", "-i", str(archive), timeout=120)

    def stop(self) -> None:
        """Stop the engine and everything it started (containers, shims, its containerd)."""
        self._remove_containers()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._kill_leftovers()
        unmount_below(self.base)

    def _remove_containers(self) -> None:
        if self.proc is None or self.proc.poll() is not None or not self.socket.exists():
            return
        client = ["docker", "-H", self.url] if self.kind == "docker" else ["podman", "--url", self.url]
        with contextlib.suppress(Exception):  # the engine may be half-started or gone
            ids = run(*client, "ps", "-aq", timeout=30).split()
            if ids:
                run(*client, "rm", "-f", *ids, check=False, timeout=60)

    def _kill_leftovers(self) -> None:
        """Processes that outlive the engine and name this host's dirs (shims, conmon, a
        managed containerd): found by their command line, killed by PID."""
        marker = str(self.base)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)


@dataclass
class Host:
    """One host: its namespace, underlay address, engine and (once started) shoal daemon."""

    name: str
    netns: str
    ip: str
    base: Path
    engine: Engine
    node: ShoalNode | None = None

    def shoal(self) -> ShoalNode:
        assert self.node is not None, f"{self.name} has no shoal daemon"
        return self.node

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> str:
        """A command in this host's network namespace."""
        return run(*in_netns(self.netns), *argv, check=check, timeout=timeout)

    def engine_client(self) -> list[str]:
        """The engine's CLI, talking to this host's engine."""
        if self.engine.kind == "docker":
            return ["docker", "-H", self.engine.url]
        return ["podman", "--url", self.engine.url]

    def engine_cli(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        return run(*self.engine_client(), *args, check=check, timeout=timeout)

    def links(self) -> list[dict[str, Any]]:
        return list(json.loads(self.run("ip", "-j", "link")))

    def ruleset(self) -> list[dict[str, Any]]:
        return list(json.loads(self.run("nft", "-j", "list", "ruleset")).get("nftables", []))


@dataclass
class Client:
    """A client process on the underlay and its output files."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def stop(self) -> None:
        terminate(self.proc)

    def json_lines(self) -> list[dict[str, Any]]:
        """The complete JSON lines written so far."""
        text = self.stdout.read_text(errors="replace")
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"client exited {self.proc.returncode}: {self.stderr.read_text()[-2000:]}")


@dataclass
class Cluster:
    """N hosts on one underlay, each with its engine; ``start_shoal`` makes them a swarm."""

    count: int
    runtime: str = "docker"
    images: Sequence[str] = IMAGES
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: list[Host] = field(default_factory=list)
    undo: Undo = field(default_factory=Undo)
    base: Path = field(init=False)

    def __post_init__(self) -> None:
        # Short: unix socket paths (containerd's under the exec root) must stay under 108 bytes.
        self.base = Path(tempfile.mkdtemp(prefix=f"shm{self.tag}-", dir="/tmp"))
        self.undo.push(f"remove {self.base}", lambda: shutil.rmtree(self.base, ignore_errors=True))

    @property
    def hub(self) -> str:
        return f"shm{self.tag}hub"

    # ------------------------------------------------------------------ up

    def up(self) -> Cluster:
        """Make the underlay and the hosts with their engines (images loaded)."""
        try:
            self._underlay()
            archive = self._save_images()
            for index in range(1, self.count + 1):
                self.hosts.append(self._host(index))
            for host in self.hosts:
                host.engine.start(self.undo)
            for host in self.hosts:
                host.engine.load_images(archive)
        except BaseException:
            self.down()
            raise
        return self

    def _netns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.undo.push(f"delete netns {name}", lambda: run("ip", "netns", "delete", name) and None)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _underlay(self) -> None:
        self._netns(self.hub)
        run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.hub, "addr", "add", f"{CLIENT_IP}/24", "dev", "br0")
        run("ip", "-n", self.hub, "link", "set", "br0", "up")

    def _host(self, index: int) -> Host:
        name = f"h{index}"
        netns = f"shm{self.tag}{name}"
        self._netns(netns)
        hub_end = f"u{index}"
        # Made inside the hub namespace (no device ever appears in the host's namespace), the
        # host's end moved into its namespace: deleting the namespaces removes both ends.
        run(
            "ip",
            "-n",
            self.hub,
            "link",
            "add",
            hub_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns,
        )
        run("ip", "-n", self.hub, "link", "set", hub_end, "master", "br0", "up")
        ip = f"{UNDERLAY_PREFIX}.{10 + index}"
        run("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        base = self.base / name
        base.mkdir()
        return Host(name, netns, ip, base, Engine(self.runtime, base, netns))

    def _save_images(self) -> Path:
        archive = self.base / "images.tar"
        if self.runtime == "docker":
            run("docker", "save", "-o", str(archive), *self.images, timeout=120)
        else:
            local = [image if "/" in image else f"localhost/{image}" for image in self.images]
            run("podman", "save", "-m", "-o", str(archive), *local, timeout=120)
        return archive

    # ------------------------------------------------------------------ shoal

    def start_shoal(self, *init_args: str, heartbeat: str = "1s") -> None:
        """A shoal daemon on each host (the first one the manager), joined into one swarm."""
        try:
            for host in self.hosts:
                node = ShoalNode(
                    self.base / "shoal",
                    name=host.name,
                    runtime=self.runtime,
                    host=host.ip,
                    port=SHOAL_PORT,
                    wrapper=in_netns(host.netns),
                    env_extra=host.engine.env(),
                )
                host.node = node
                self.undo.push(f"stop shoal on {host.name}", node.kill)
                node.start()
            manager = self.hosts[0].shoal()
            manager.init(*init_args)
            manager.ok("swarm", "update", "--dispatcher-heartbeat", heartbeat)
            for host in self.hosts[1:]:
                host.shoal().join(manager)
        except BaseException:
            self.down()
            raise

    @property
    def manager(self) -> ShoalNode:
        return self.hosts[0].shoal()

    # ------------------------------------------------------------------ clients

    def client(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command run from the underlay, as a client outside every host would."""
        return subprocess.run([*in_netns(self.hub), *argv], capture_output=True, text=True, timeout=timeout)

    def start_client(self, *argv: str) -> Client:
        """A long-running client on the underlay (a prober, a load generator) writing to a
        file (a pipe nobody reads would stall it); stopped at teardown at the latest."""
        out = self.base / f"client-{secrets.token_hex(4)}"
        with open(f"{out}.out", "wb") as stdout, open(f"{out}.err", "wb") as stderr:
            proc = subprocess.Popen([*in_netns(self.hub), *argv], stdout=stdout, stderr=stderr)
        client = Client(proc, Path(f"{out}.out"), Path(f"{out}.err"))
        self.undo.push("stop a client", client.stop)
        return client

    # ------------------------------------------------------------------ down

    def down(self) -> None:
        """Undo everything (processes, namespaces, dirs, devices); safe to call twice."""
        failures = self.undo.run_all()
        if failures:
            raise RuntimeError("multihost teardown left something: " + "; ".join(failures))


@contextlib.contextmanager
def cluster(count: int, runtime: str = "docker", *init_args: str) -> Iterator[Cluster]:
    """``count`` hosts with their engines and a shoal swarm over them, torn down at the end."""
    hosts = Cluster(count, runtime)
    hosts.up()
    try:
        hosts.start_shoal(*init_args)
        yield hosts
    finally:
        hosts.down()


def leftovers(tag: str) -> list[str]:
    """Namespaces, mounts and processes of a harness run still present."""
    found = [line.split()[0] for line in run("ip", "netns", "list").splitlines() if tag in line]
    found += [point for point in mounts_below(Path("/tmp")) if f"/tmp/shm{tag}-" in point]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if f"/tmp/shm{tag}-".encode() in (entry / "cmdline").read_bytes():
                    found.append(f"pid {entry.name}")
    return found


def elapsed(since: float) -> float:
    return time.monotonic() - since
