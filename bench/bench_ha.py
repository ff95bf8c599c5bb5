"""HA managers: commit latency, throughput, leader failover and quorum loss (3 managers).

Three real ``shoal daemon`` processes on 127.0.0.1 (one port each) form a swarm of three managers
(``swarm init``, ``swarm join-token manager``, ``swarm join``); the managers replicate the store
with the default ``raft`` store (fsync on every commit) over the default ``grpc`` transport with
mutual TLS. The benchmark talks to each daemon through its local API socket, as the CLI does.

The write is ``node.update`` of the daemon's own node with one label, ``k=v<i>``: one small
committed entry (the node object does not grow, the value is replaced) that touches no
container. Scenarios, timed like shared/reference/swarm-anchor-on-this-machine.md:

1. ``latency``: one write at a time, against the leader and against a follower (which forwards
   the call to the leader over gRPC), each with a new connection per call (as the CLI) and over
   one kept connection (as etcd's benchmark tool, and any program making many calls); the four
   take turns in rounds; median and p99.
2. ``throughput``: ``--concurrency`` writes in flight at once (asyncio, raw JSON-lines requests
   on the leader's socket, a new connection per request), ``--ops`` in all -> commits/s.
3. ``failover``: ``kill -9`` of the leader -> end of the first write accepted through a survivor.
   Writes are retried back to back through the survivors (a new probe every 50 ms, alternating
   survivors, several in flight, so one call that blocks cannot hide an earlier success). The
   killed manager is restarted between repetitions and the swarm waited on to be healthy again;
   that restart is timed too (``killed manager back``).
4. ``quorum``: ``kill -9`` of two managers -> end of the first write on the survivor refused with
   "The swarm does not have a leader"; once for a survivor that was the leader, once for a
   follower, per repetition; plus how long a refused write takes afterwards (steady state).

    .venv/bin/python bench/bench_ha.py [--reps 10] [--quorum-reps 3] [--ops 2000] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.client import Client, ClientError

NO_LEADER = "The swarm does not have a leader"


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


class Node:
    """One manager daemon: its own dir, port, socket and log; restartable on the same state."""

    def __init__(self, base: Path, name: str, extra_args: list[str]) -> None:
        self.name = name
        self.extra_args = extra_args
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.sock = self.dir / "shoal.sock"
        self.client = Client(f"unix://{self.sock}", timeout=30)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()

        def up() -> bool:
            if not self.alive():
                raise SystemExit(f"daemon {self.name} exited (see {self.dir / 'daemon.log'})")
            try:
                self.client.call("info")
                return True
            except ClientError:
                return False

        wait(up, 30, f"daemon {self.name} to serve its socket")

    def info(self) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.client.call("info")
            return result
        except ClientError:
            return None

    def kept_client(self) -> Client:
        """A client that sends all its calls over one connection."""
        return Client(f"unix://{self.sock}", timeout=30, keep_alive=True)

    def write(self, i: int, client: Client | None = None) -> None:
        (client or self.client).call("node.update", node="self", label_add=[f"k=v{i}"])

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    def __init__(self, store: str = "raft", daemon_args: tuple[str, ...] = ()) -> None:
        """``daemon_args``: more arguments for every manager daemon (e.g. a ``--plugin-opt``)."""
        self.base = Path(tempfile.mkdtemp(prefix="shoal-bench-ha-"))
        self.nodes: list[Node] = []
        self.etcd: Any = None
        try:
            extra_args: list[str] = list(daemon_args)
            if store == "etcd":  # three etcd members with mutual TLS, started here
                from shoal_store_etcd.testing import EtcdCluster

                self.etcd = EtcdCluster(self.base / "etcd")
                self.etcd.wait_ready()
                extra_args += self.etcd.plugin_args("/bench-ha")
            self.nodes = [Node(self.base, f"m{i}", extra_args) for i in (1, 2, 3)]
            first = self.nodes[0]
            first.client.call("swarm.init", advertise_addr=first.addr)
            token = first.client.call("swarm.join_token", role="manager")["Token"]
            for node in self.nodes[1:]:
                node.client.call("swarm.join", token=token, remote_addr=first.addr)
            self.wait_healthy(60)
        except BaseException:
            self.close()
            raise

    def leader(self) -> Node:
        def find() -> Node | None:
            for node in self.nodes:
                info = node.info() if node.alive() else None
                if info and info.get("IsLeader"):
                    return node
            return None

        found: Node = wait(find, 30, "a leader")
        return found

    def healthy(self) -> bool:
        """Every manager up, all agree on one leader of three members, all applied what it committed,
        and ``node ls`` (served by the leader) shows one Leader and two Reachable managers."""
        infos = [n.info() if n.alive() else None for n in self.nodes]
        if not all(infos):
            return False
        stores = [i["Store"] for i in infos if i]
        leaders = {s.get("leader") for s in stores}
        if (
            len(leaders) != 1
            or not next(iter(leaders))
            or any(len(s.get("members", [])) != 3 for s in stores)
        ):
            return False
        commit = max(int(s.get("commit_index", 0)) for s in stores)
        if any(int(s.get("applied_index", 0)) < commit for s in stores):
            return False
        try:
            rows = self.nodes[0].client.call("node.ls")
        except ClientError:
            return False
        return sorted(r["ManagerStatus"] for r in rows) == ["Leader", "Reachable", "Reachable"]

    def wait_healthy(self, timeout: float) -> None:
        wait(self.healthy, timeout, "the three managers to be healthy")

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.etcd is not None:
            self.etcd.close()
        shutil.rmtree(self.base, ignore_errors=True)


# ---------------------------------------------------------------------- 1. latency


def latency(node: Node, ops: int, client: Client | None = None, warmup: int = 20) -> list[float]:
    for i in range(warmup):
        node.write(i, client)
    samples = []
    for i in range(ops):
        start = time.perf_counter()
        node.write(i, client)
        samples.append(time.perf_counter() - start)
    return samples


#: Latency rounds: the variants take turns, so a slow spell of the machine (a shared VM varies
#: by +-20% from one minute to the next) hits all of them alike.
LATENCY_ROUNDS = 5


# ---------------------------------------------------------------------- 2. throughput


async def _raw_call(path: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(json.dumps({"method": method, "params": params}).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
    if not line:
        return {"error": {"message": "connection closed without an answer"}}
    message: dict[str, Any] = json.loads(line)
    return message


async def _throughput(
    paths: list[str], concurrency: int, ops: int
) -> tuple[float, list[float], dict[str, int]]:
    counter = iter(range(ops))
    samples: list[float] = []
    errors: dict[str, int] = {}
    resets = [0]

    async def worker(path: str) -> None:
        for i in counter:
            start = time.perf_counter()
            params = {"node": "self", "label_add": [f"k=t{i}"]}
            for _attempt in range(100):
                try:
                    message = await _raw_call(path, "node.update", params)
                    break
                except OSError as exc:
                    # The socket's listen backlog (asyncio's default, 100) overflows when more
                    # clients connect at once: the connection is reset before the request is
                    # read. Counted, then retried (the label write is idempotent).
                    message = {"error": {"message": f"connection: {exc}"}}
                    resets[0] += 1
                    await asyncio.sleep(0.005)
            if "error" in message:
                key = str(message["error"].get("message"))[:120]
                errors[key] = errors.get(key, 0) + 1
            else:
                samples.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(paths[w % len(paths)]) for w in range(concurrency)))
    if resets[0]:
        errors["connections reset at connect (listen backlog), retried"] = resets[0]
    return time.perf_counter() - start, samples, errors


def throughput(nodes: list[Node], concurrency: int, ops: int) -> tuple[float, list[float], dict[str, int]]:
    """Workers are spread round robin over ``nodes``; each writes its daemon's own node."""
    return asyncio.run(_throughput([str(n.sock) for n in nodes], concurrency, ops))


# ---------------------------------------------------------------------- 3./4. kill scenarios


class Probes:
    """Writes started every ``period`` s (round robin over ``targets``), each in its own thread with
    its own client, at most ``cap`` in flight; records (start, end, outcome) relative to ``t0``."""

    def __init__(self, targets: list[Node], t0: float, period: float = 0.05, cap: int = 40) -> None:
        self.targets, self.t0, self.period, self.cap = targets, t0, period, cap
        self.results: list[tuple[float, float, str, str]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.inflight = threading.Semaphore(cap)
        self.threads: list[threading.Thread] = []

    def _probe(self, node: Node, i: int) -> None:
        start = time.monotonic() - self.t0
        try:
            node.write(100000 + i, Client(f"unix://{node.sock}", timeout=60))
            outcome = "ok"
        except ClientError as exc:
            outcome = exc.message
        end = time.monotonic() - self.t0
        with self.lock:
            self.results.append((start, end, node.name, outcome))
        self.inflight.release()

    def run_until(self, done: Callable[[list[tuple[float, float, str, str]]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        i = 0
        while not self.stop.is_set():
            with self.lock:
                if done(self.results):
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"no result within {timeout}s: {self.results[-5:]}")
            if self.inflight.acquire(timeout=self.period):
                node = self.targets[i % len(self.targets)]
                thread = threading.Thread(target=self._probe, args=(node, i), daemon=True)
                thread.start()
                self.threads.append(thread)
                i += 1
                time.sleep(self.period)
        for thread in self.threads:
            thread.join(90)


def failover_once(cluster: Cluster) -> tuple[float, float, dict[str, int]]:
    old = cluster.leader()
    survivors = [n for n in cluster.nodes if n is not old]
    t0 = time.monotonic()
    old.kill()
    probes = Probes(survivors, t0)
    probes.run_until(lambda results: any(r[3] == "ok" for r in results), 60)
    first_ok = min(r[1] for r in probes.results if r[3] == "ok")
    failures: dict[str, int] = {}
    for _start, end, _name, outcome in probes.results:
        if outcome != "ok" and end < first_ok:
            failures[outcome[:100]] = failures.get(outcome[:100], 0) + 1
    t1 = time.monotonic()
    old.start()
    cluster.wait_healthy(60)
    return first_ok, time.monotonic() - t1, failures


def quorum_once(cluster: Cluster, survivor_is_leader: bool) -> tuple[float, float, float, dict[str, int]]:
    """-> (end of the first refused write, its start, duration of a refused write later, other outcomes)."""
    leader = cluster.leader()
    followers = [n for n in cluster.nodes if n is not leader]
    survivor = leader if survivor_is_leader else followers[0]
    victims = [n for n in cluster.nodes if n is not survivor]
    t0 = time.monotonic()
    for victim in victims:
        victim.kill()
    probes = Probes([survivor], t0, period=0.1)
    probes.run_until(lambda results: any(NO_LEADER in r[3] for r in results), 60)
    refused = min((r for r in probes.results if NO_LEADER in r[3]), key=lambda r: r[1])
    first_refused = refused[1]
    others: dict[str, int] = {}
    for _start, end, _name, outcome in probes.results:
        if NO_LEADER not in outcome and end <= first_refused:
            others[outcome[:100]] = others.get(outcome[:100], 0) + 1
    # Steady state: how long a refused write takes once the swarm is known to have no leader.
    steady = []
    for i in range(3):
        start = time.monotonic()
        try:
            survivor.write(200000 + i)
            raise SystemExit("a write was accepted without a quorum")
        except ClientError as exc:
            if NO_LEADER not in exc.message:
                others[exc.message[:100]] = others.get(exc.message[:100], 0) + 1
        steady.append(time.monotonic() - start)
    for victim in victims:
        victim.start()
    cluster.wait_healthy(90)
    return first_refused, refused[0], statistics.median(steady), others


# ---------------------------------------------------------------------- main


def machine() -> str:
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"nproc {os.cpu_count()}, {model}, Python {sys.version.split()[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=10, help="failover repetitions")
    parser.add_argument(
        "--quorum-reps", type=int, default=3, help="quorum-loss repetitions per survivor kind"
    )
    parser.add_argument("--ops", type=int, default=2000, help="writes per latency run and per throughput run")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument(
        "--only",
        default="latency,throughput,failover,quorum",
        help="comma-separated subset of: latency, throughput, failover, quorum",
    )
    parser.add_argument(
        "--store",
        choices=("raft", "etcd"),
        default="raft",
        help="the managers' store (etcd: three etcd 3.4 members with mutual TLS, started here)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - {"latency", "throughput", "failover", "quorum"}
    if unknown:
        parser.error(f"unknown --only scenario(s): {', '.join(sorted(unknown))}")
    if args.store == "etcd" and "quorum" in only:
        parser.error(
            "quorum is the managers' quorum, which the etcd store does not have: use --only without it"
        )
    if args.reps < 1 or args.quorum_reps < 1 or args.ops < 1 or args.concurrency < 1:
        parser.error("--reps, --quorum-reps, --ops and --concurrency must be at least 1")

    print(f"machine: {machine()}", flush=True)
    print(f"store: {args.store}", flush=True)
    cluster = Cluster(args.store)
    rows: list[tuple[str, str, str]] = []
    notes: list[str] = []
    try:
        if "latency" in only:
            leader = cluster.leader()
            follower = next(n for n in cluster.nodes if n is not leader)
            variants = [
                ("via leader, a new connection per call (as the CLI)", leader, None),
                ("via leader, one connection (as etcd's benchmark)", leader, leader.kept_client()),
                ("via follower (forwarded), a new connection per call", follower, None),
                ("via follower (forwarded), one connection", follower, follower.kept_client()),
            ]
            samples: dict[str, list[float]] = {label: [] for label, _, _ in variants}
            for _ in range(LATENCY_ROUNDS):
                for label, node, client in variants:
                    samples[label] += [s * 1000 for s in latency(node, args.ops // LATENCY_ROUNDS, client)]
            for label, _, client in variants:
                if client is not None:
                    client.close()
                ms = samples[label]
                rows.append(
                    (
                        f"commit latency, 1 at a time, {label}",
                        f"median {statistics.median(ms):.2f} ms, p99 {pct(ms, 0.99):.2f} ms",
                        "etcd 3.4 mTLS put: median 1.3-1.7 ms, p99 4.5-7.9 ms",
                    )
                )
                print(rows[-1], flush=True)
        if "throughput" in only:
            leader = cluster.leader()
            followers = [n for n in cluster.nodes if n is not leader]
            for label, targets in (("leader", [leader]), ("both followers (forwarded)", followers)):
                syncs0 = int((leader.info() or {}).get("Store", {}).get("wal_syncs", 0))
                elapsed, samples, errors = throughput(targets, args.concurrency, args.ops)
                syncs = int((leader.info() or {}).get("Store", {}).get("wal_syncs", 0)) - syncs0
                ms = [s * 1000 for s in samples] or [0.0]
                rows.append(
                    (
                        f"throughput, {args.concurrency} concurrent, via {label}",
                        f"{len(samples) / elapsed:,.0f} commits/s ({len(samples)} ok in {elapsed:.2f} s; "
                        f"per write median {statistics.median(ms):.0f} ms, p99 {pct(ms, 0.99):.0f} ms; "
                        f"{syncs} leader fsyncs)",
                        "etcd 3.4 mTLS: 2,800-3,700 puts/s at 256",
                    )
                )
                if errors:
                    notes.append(f"throughput via {label}: errors {errors}")
                print(rows[-1], errors or "", flush=True)
        if "failover" in only:
            times: list[float] = []
            backs: list[float] = []
            failures: dict[str, int] = {}
            for rep in range(args.reps):
                first_ok, back, seen = failover_once(cluster)
                times.append(first_ok)
                backs.append(back)
                for key, count in seen.items():
                    failures[key] = failures.get(key, 0) + count
                print(
                    f"failover rep {rep + 1}: first write accepted {first_ok:.2f} s, back {back:.2f} s",
                    flush=True,
                )
            rows.append(
                (
                    f"leader kill -9 -> first write accepted (n={args.reps})",
                    summary(times) + " s",
                    "Swarm: 12.31 (11.51-14.37) s",
                )
            )
            rows.append(("killed manager back (restart -> healthy)", summary(backs) + " s", "Swarm: 6.10 s"))
            if failures:
                notes.append(f"failover: probes failing before the first accepted write: {failures}")
        if "quorum" in only:
            for is_leader, label in ((True, "old leader"), (False, "a follower")):
                refused: list[float] = []
                starts: list[float] = []
                steady: list[float] = []
                others: dict[str, int] = {}
                for rep in range(args.quorum_reps):
                    first, began, took, seen = quorum_once(cluster, is_leader)
                    refused.append(first)
                    starts.append(began)
                    steady.append(took)
                    for key, count in seen.items():
                        others[key] = others.get(key, 0) + count
                    print(
                        f"quorum ({label}) rep {rep + 1}: refused at {first:.2f} s, steady {took:.3f} s",
                        flush=True,
                    )
                swarm = (
                    "17.40 s blocking, fast error 27.37 s" if is_leader else "blocks 20 s, fast error 23.71 s"
                )
                rows.append(
                    (
                        f"kill 2 of 3 (survivor = {label}) -> write refused 'no leader' (n={args.quorum_reps})",
                        f"{summary(refused)} s (that call started at {summary(starts)} s)",
                        f"Swarm: {swarm}",
                    )
                )
                rows.append(
                    (
                        f"  then, without quorum: one refused write (survivor = {label})",
                        f"{statistics.median(steady):.3f} s",
                        "Swarm: 0.07 s (service create)",
                    )
                )
                if others:
                    notes.append(f"quorum ({label}): other outcomes before the first refusal: {others}")
    finally:
        cluster.close()

    print("\n| scenario | shoal | reference |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    for note in notes:
        print(f"\n{note}")
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
