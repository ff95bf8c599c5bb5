"""Issue 13, defect 3: a service far larger than its node can start quickly.

``--replicas 10000`` on one worker used to fire one engine call per task at once and retry
calls that timed out while dockerd was still working on them: dockerd ran out of file
descriptors and refused every client on the host, the worker went Down, and ~10,000
containers were left behind after ``service rm``.

Here a worker runs a service of ``REPLICAS`` replicas on a dockerd of its own, started by the
test (own data root, exec root, pidfile and socket; no iptables, no bridge), so the load and
the count of containers left are this test's alone. Over the run the test asserts that

- the worker never goes Down and its session never breaks (heartbeat period 1 s: three
  missed heartbeats, 3 s, would mark it Down and end the session);
- the engine answers ``_ping`` from another client within ``PING_LIMIT`` every time;
- ``service rm`` while the backlog is still being worked through (creates in flight and
  queued) leaves zero containers in the engine.

``REPLICAS = 300``: on the 2-core CI machine dockerd starts about 10 containers a second, so
300 is a backlog of half a minute, far more than the node starts at once (the bound is 8),
while the whole test stays around a minute and a half (each running container also costs
~13 MB for its shim, 4 GB at 300). The service is removed once ``REMOVE_AT`` replicas run.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from harness import TEST_IMAGE, ShoalNode, wait_until

pytestmark = [pytest.mark.cluster]

REPLICAS = 300
REMOVE_AT = 120
#: Slowest acceptable ``_ping`` answer while the engine works through the backlog.
PING_LIMIT = 3.0
PING_EVERY = 0.25
NODE_LABEL = "io.shoal.node.id"
TASK_LABEL = "io.shoal.task.id"


def ping(path: Path, timeout: float) -> None:
    """One ``GET /_ping`` on the engine's socket, as any other client of the host would."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: engine\r\n\r\n")
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
    status = reply.split(b"\r\n", 1)[0]
    if b" 200 " not in status:
        raise OSError(f"unexpected answer {status[:80]!r}")


@dataclass
class Pinger:
    """Pings the engine every ``PING_EVERY`` seconds from its own thread, timing each answer."""

    socket: Path
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-pinger", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PING_EVERY):
            began = time.monotonic()
            try:
                ping(self.socket, timeout=PING_LIMIT * 4)
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                self.latencies.append(time.monotonic() - began)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(PING_LIMIT * 5)


@dataclass
class DedicatedEngine:
    """A dockerd started for one test."""

    base: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.base / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.url, timeout=60)

    def containers(self, node_id: str = "") -> list[dict[str, object]]:
        filters = {"label": f"{NODE_LABEL}={node_id}"} if node_id else {}
        with self.client() as api:
            return list(api.containers(all=True, filters=filters))

    def running(self, node_id: str) -> int:
        return sum(1 for c in self.containers(node_id) if c.get("State") == "running")

    def log(self) -> str:
        return (self.base / "dockerd.log").read_text(errors="replace")


def start_dockerd(base: Path) -> DedicatedEngine:
    log = open(base / "dockerd.log", "ab")
    proc = subprocess.Popen(
        [
            # Its own network namespace: a dockerd started with --bridge=none deletes the
            # interface docker0 of its namespace, which would break the main dockerd for every
            # later test (and the demo) on this host.
            "unshare", "--net",
            "dockerd",
            "--data-root", str(base / "data"),
            "--exec-root", str(base / "exec"),
            "--pidfile", str(base / "docker.pid"),
            "-H", f"unix://{base / 'docker.sock'}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )  # fmt: skip
    engine = DedicatedEngine(base, proc)

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dockerd exited with {proc.returncode}: {engine.log()[-2000:]}")
        try:
            ping(engine.socket, timeout=2)
        except OSError:
            return False
        return True

    wait_until(answers, 60, what=f"the test's dockerd to answer on {engine.socket}")
    return engine


def load_test_image(engine: DedicatedEngine) -> None:
    """Copy the test image from the main engine (scripts/build-test-images.sh builds it)."""
    save = subprocess.Popen(["docker", "save", TEST_IMAGE], stdout=subprocess.PIPE)
    load = subprocess.run(
        ["docker", "-H", engine.url, "load"], stdin=save.stdout, capture_output=True, text=True, timeout=120
    )
    assert save.stdout is not None
    save.stdout.close()
    assert save.wait(60) == 0, f"docker save {TEST_IMAGE} failed: run scripts/build-test-images.sh docker"
    assert load.returncode == 0, f"loading {TEST_IMAGE} into the test's dockerd failed: {load.stderr}"


def stop_dockerd(engine: DedicatedEngine) -> None:
    with engine.client() as api:
        for container in api.containers(all=True):
            api.remove_container(container["Id"], force=True)
    engine.proc.send_signal(signal.SIGTERM)
    try:
        engine.proc.wait(60)
    except subprocess.TimeoutExpired:
        engine.proc.kill()
        engine.proc.wait(10)


@pytest.fixture
def dedicated_dockerd() -> Iterator[DedicatedEngine]:
    # Under /tmp with a short name: containerd's sockets live under the exec root and a Unix
    # socket path must stay under 108 bytes (pytest's tmp_path can be longer).
    base = Path(tempfile.mkdtemp(prefix="shoal-eng.", dir="/tmp"))
    engine = start_dockerd(base)
    try:
        load_test_image(engine)
        yield engine
    finally:
        try:
            stop_dockerd(engine)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def node_status(manager: ShoalNode, hostname: str) -> str:
    rows = manager.ok("node", "ls", "--format", "json").json_lines()
    return next((str(row["Status"]) for row in rows if row["Hostname"] == hostname), "missing")


def task_label(container: dict[str, object]) -> str:
    labels = container.get("Labels")
    return str(labels.get(TASK_LABEL, "?")) if isinstance(labels, dict) else "?"


def describe_left(
    left: list[dict[str, object]], status: str, engine: DedicatedEngine, manager: ShoalNode, worker: ShoalNode
) -> str:
    """What a removal that did not converge left: the worker's last status, the containers still
    on the engine (name, state, status, task label, and what the engine logged of them), the
    tasks the manager still has and the worker's log, so that a failure says whether a
    container, a task or the node is what is missing (the engine's data goes at teardown)."""
    rows = [f"{c.get('Names')} {c.get('State')} ({c.get('Status')}) task {task_label(c)}" for c in left]
    ids = [str(c.get("Id", ""))[:12] for c in left[:10]]
    logged = [line for line in engine.log().splitlines() if any(i and i in line for i in ids)]
    tasks = manager.cli("node", "ps", "worker", "--no-trunc")
    return (
        f"worker {status}; {len(left)} containers left: {rows[:10]}; "
        f"the engine's log of them: {logged[-20:]}; "
        f"the worker's tasks as the manager has them: {(tasks.stdout + tasks.stderr).strip()[:3000]}; "
        f"worker log tail: {worker.log_text()[-3000:]}"
    )


def session_breaks(worker: ShoalNode) -> list[str]:
    return [line for line in worker.log_text().splitlines() if "session with manager" in line]


def test_a_service_far_larger_than_its_node_neither_downs_it_nor_its_engine(
    dedicated_dockerd: DedicatedEngine, node_factory: Callable[..., ShoalNode]
) -> None:
    engine = dedicated_dockerd
    on_engine = ["--plugin-opt", f"runtime.host={engine.url}"]
    manager = node_factory(name="mgr", extra_args=on_engine).start()
    manager.init()
    manager.ok("swarm", "update", "--dispatcher-heartbeat", "1s")
    manager.ok("node", "update", "--availability", "drain", "mgr")
    worker = node_factory(name="worker", extra_args=on_engine).start()
    worker.join(manager)
    worker_id = worker.node_id()
    wait_until(lambda: node_status(manager, "worker") == "Ready", 30, what="the worker Ready")

    pinger = Pinger(engine.socket)
    pinger.start()
    statuses: list[str] = []

    def worker_status() -> str:
        statuses.append(node_status(manager, "worker"))
        return statuses[-1]

    try:
        manager.ok(
            "service", "create", "--name", "big", "--replicas", str(REPLICAS),
            "--stop-grace-period", "0s", "--detach", TEST_IMAGE,
        )  # fmt: skip
        wait_until(
            lambda: worker_status() == "Ready" and engine.running(worker_id) >= REMOVE_AT,
            240,
            interval=1.0,
            what=f"{REMOVE_AT} of {REPLICAS} replicas running on the test's engine",
        )
        running_at_removal = engine.running(worker_id)
        manager.ok("service", "rm", "big")
        left: list[dict[str, object]] = []

        def all_gone() -> bool:
            left[:] = engine.containers()
            return worker_status() == "Ready" and not left

        try:
            wait_until(all_gone, 240, interval=1.0, what="every container of the removed service gone")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: {describe_left(left, statuses[-1], engine, manager, worker)}"
            ) from None
    finally:
        pinger.stop()

    print(f"pings: {len(pinger.latencies)}, slowest {max(pinger.latencies, default=0):.2f}s")
    assert running_at_removal < REPLICAS, "the service was removed with no backlog left: raise REPLICAS"
    assert set(statuses) == {"Ready"}, f"the worker was not always Ready: {sorted(set(statuses))}"
    assert not session_breaks(worker), f"the worker's session broke: {session_breaks(worker)}"
    assert not pinger.failures, f"the engine refused or dropped pings: {pinger.failures[:5]}"
    assert pinger.latencies, "no ping was answered"
    slowest = max(pinger.latencies)
    assert slowest < PING_LIMIT, f"the engine took {slowest:.1f}s to answer a ping (limit {PING_LIMIT}s)"
