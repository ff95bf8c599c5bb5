"""Helpers for tests that run real ``shoal daemon`` processes.

Each ``ShoalNode`` owns its state dir, socket, port and log file, and is killed at teardown.
Tests wait on conditions with deadlines (``wait_until``), never on fixed sleeps.

What a test should not wait out unless it is what the test checks (each costs seconds a run):
- ``service create/scale/update`` without ``-d`` follow the service until it has been stable
  for 5 s (docker's verify), even at ``--replicas 0``: pass ``-d`` and wait for the state.
- ``sleep`` as a container's PID 1 ignores SIGTERM: every stop (scale-down, rm, rolling
  update) waits the 10 s stop grace unless the service has ``--stop-grace-period 0s``.
- A killed node is Down after three heartbeats, and a new leader waits two grace periods
  before marking any node Down: ``start_cluster`` sets a 1 s heartbeat; set it
  (``swarm update --dispatcher-heartbeat 1s``) where a test waits for a dead node's tasks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
RUNTIMES = ("docker", "podman")
TEST_IMAGE = "shoal-busybox:1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition} (last: {last!r})")


@dataclass
class CLIResult:
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@dataclass
class ShoalNode:
    """One ``shoal daemon`` process with its own dirs and port."""

    base: Path
    name: str = "node1"
    runtime: str = "docker"
    extra_args: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    env_extra: dict[str, str] = field(default_factory=dict)
    #: Command prefix for the daemon, e.g. ``nsenter --net=/var/run/netns/X`` to run it in a
    #: network namespace (the CLI still reaches it through its Unix socket).
    wrapper: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = self.port or (free_port(self.host) if not self.wrapper else 2377)
        self.state_dir = self.base / self.name / "state"
        self.socket = self.base / self.name / "shoal.sock"
        self.log = self.base / self.name / "daemon.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SHOAL_HOST"] = f"unix://{self.socket}"
        env.pop("SHOAL_PLUGINS", None)
        env.update(self.env_extra)
        return env

    def daemon_args(self) -> list[str]:
        return [
            *self.wrapper,
            *SHOAL,
            "daemon",
            "--state-dir",
            str(self.state_dir),
            "--socket",
            str(self.socket),
            "--listen-addr",
            self.addr,
            "--hostname",
            self.name,
            "--plugin",
            f"runtime={self.runtime}",
            *self.extra_args,
        ]

    def start(self, wait: bool = True) -> ShoalNode:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(self.daemon_args(), stdout=log, stderr=log, env=self.env())
        if wait:
            wait_until(self._ready, 30, what=f"daemon {self.name} to serve its socket (log: {self.log})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"daemon {self.name} exited with {self.proc.returncode}: {self.log_text()[-2000:]}"
            )
        return self.socket.exists() and self.cli("info").returncode == 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cli(self, *args: str, timeout: float = 120) -> CLIResult:
        proc = subprocess.run(
            [*SHOAL, *args], capture_output=True, text=True, env=self.env(), timeout=timeout
        )
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, timeout: float = 120) -> CLIResult:
        result = self.cli(*args, timeout=timeout)
        assert result.returncode == 0, f"shoal {' '.join(args)} failed ({result.returncode}): {result.stderr}"
        return result

    def init(self, *args: str) -> CLIResult:
        return self.ok("swarm", "init", "--advertise-addr", self.addr, *args)

    def join(self, manager: ShoalNode, role: str = "worker", *args: str) -> CLIResult:
        token = manager.ok("swarm", "join-token", "-q", role).stdout.strip()
        return self.ok("swarm", "join", "--token", token, *args, manager.addr)

    def info(self) -> dict[str, Any]:
        return json.loads(self.ok("info", "--format", "json").stdout)  # type: ignore[no-any-return]

    def node_id(self) -> str:
        return str(self.info()["NodeID"])

    def node_id_from_state(self) -> str:
        """The node ID recorded in the state dir, even when the daemon is down."""
        path = self.state_dir / "state.json"
        return str(json.loads(path.read_text())["node_id"]) if path.exists() else ""

    def tasks(self, service: str) -> list[dict[str, Any]]:
        return self.ok("service", "ps", service, "--no-trunc", "--format", "json").json_lines()

    def running(self, service: str) -> list[dict[str, Any]]:
        return [
            t
            for t in self.tasks(service)
            if t["DesiredState"] == "Running" and t["CurrentState"].startswith("Running")
        ]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"daemon {self.name} did not stop within {timeout}s after signal {sig}"
            ) from None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def start_cluster(
    factory: Callable[..., ShoalNode], *workers: str, heartbeat: str = "1s"
) -> tuple[ShoalNode, list[ShoalNode]]:
    """A manager ``mgr`` (heartbeat ``heartbeat``) and one worker per name, each on its own
    loopback address (127.0.0.2, 127.0.0.3, ...), all joined."""
    manager = factory(name="mgr").start()
    manager.init()
    manager.ok("swarm", "update", "--dispatcher-heartbeat", heartbeat)
    joined = []
    for index, name in enumerate(workers, start=2):
        worker = factory(name=name, host=f"127.0.0.{index}").start()
        worker.join(manager)
        joined.append(worker)
    return manager, joined


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """End a helper process a test started (a registry, a mock server): SIGTERM, then SIGKILL
    after ``timeout`` seconds; reaped either way. Nothing if it is gone already."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
