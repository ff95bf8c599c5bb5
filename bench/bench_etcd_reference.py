"""Commit latency of shoal and of etcd side by side, on this machine, in one run.

The HA benchmark (``bench_ha.py``) compares shoal's write latency with etcd figures measured on
another day, and this VM's speed drifts by tens of percent from one hour to the next. This
script removes that doubt: it starts a 3-manager shoal swarm (as ``bench_ha.py`` does) AND a
3-member etcd 3.4 cluster (Debian's ``etcd-server``: ``apt-get install etcd-server``), both on
127.0.0.1 with mutual TLS between members and with the client, fsync on, and measures one write
at a time against each leader, the two taking turns in rounds.

- shoal: ``node update --label-add k=v<i>`` through the leader's local API over one kept
  connection (``bench_ha.latency``);
- etcd: ``KV.Put`` of a 16-byte value, one key, over one grpc.aio mTLS channel to the leader (the
  client of the etcd reference figures in ``shared/reference/raft-behaviours.md``). Each etcd
  round runs in a fresh client process (``--etcd-client``) so that its gRPC setup is independent
  of this one; ``--etcd-engine default`` uses gRPC's default I/O engine, ``classic`` the one shoal's
  daemons use. A third client puts with gRPC's *blocking* API (classic engine): the client of the
  same kind as shoal's here, which blocks in one call on its kept connection with no event loop
  (a grpc.aio answer wakes gRPC's poller thread and then the loop; a blocking one only the calling
  thread). The fastest of the three is etcd's figure (the conservative comparison for shoal).

Throughput (``--only throughput``, or both by default): ``--concurrency`` writers in flight
(256), ``--throughput-ops`` writes per round, the systems taking turns each round: shoal with each
writer over its own kept local-API connection, shoal with a new connection per write (the
method of ``bench_ha.py``'s throughput), and etcd with that many coroutines sharing one kept
grpc.aio mTLS channel in a fresh client process (the method of etcd's reference figures). shoal's
row also says how many Raft entries and leader fsyncs the writes took (group commit).

Both clusters run throughout: each round's idle cluster costs the other its heartbeats.
``--second-swarm OPT`` starts a second shoal swarm whose managers get ``--plugin-opt OPT`` (e.g.
``transport.serving-thread=off``) and measures it in the same latency rounds, right after the
first: two settings and etcd in one run. ``--with-serving-thread`` is
``--second-swarm transport.serving-thread=on`` (the default since issue 18: the same as the first).

With the latency rounds the bench also prints the servers' CPU per write (from
``/proc/<pid>/stat``, warm-up writes included): shoal's leader and its two followers, etcd's
three members, and the second swarm's leader and followers. CPU per write is far less sensitive to the machine's load than latency, so it
is what to compare between two versions of shoal measured at different times.

    .venv/bin/python bench/bench_etcd_reference.py --ops 600 --rounds 5 --throughput-ops 3000
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_ha

KV_PUT = "/etcdserverpb.KV/Put"
STATUS = "/etcdserverpb.Maintenance/Status"
CLASSIC_IO = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"


# ---------------------------------------------------------------------- protobuf by hand
# Only PutRequest (key = 1, value = 2) and two fields of StatusResponse are needed: a few
# lines of wire format instead of etcd's generated stubs.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def put_request(key: bytes, value: bytes) -> bytes:
    return _field_bytes(1, key) + _field_bytes(2, value)


def _fields(data: bytes) -> dict[int, Any]:
    """Top-level fields of a message: varints as int, length-delimited as bytes."""
    fields: dict[int, Any] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields[number], pos = _read_varint(data, pos)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            fields[number] = data[pos : pos + size]
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return fields


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


# ---------------------------------------------------------------------- certificates


def make_certs(directory: Path) -> dict[str, Path]:
    """A root (shoal's internal CA makes it) and one certificate signed by it for the members
    and the client: server and client use, for 127.0.0.1 (etcd checks the IP address, which
    swarm node certificates do not carry)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    from shoal import identity
    from shoal_ca_internal.ca import make_root, parse_root

    root = make_root()
    root_cert, root_key = parse_root(root)
    key_pem = identity.generate_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench etcd member")]))
        .issuer_name(root_cert.subject)
        .public_key(identity.load_private_key(key_pem).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    paths["ca"].write_bytes(root.cert_pem)
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key_pem)
    return paths


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CPUMeter:
    """CPU milliseconds per write, per process, accumulated over the rounds."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.seconds = [0.0] * len(pids)
        self.writes = 0
        self._start: list[float] = []

    def __enter__(self) -> CPUMeter:
        self._start = [cpu_seconds(p) for p in self.pids]
        return self

    def __exit__(self, *exc: object) -> None:
        for i, (pid, start) in enumerate(zip(self.pids, self._start, strict=True)):
            self.seconds[i] += cpu_seconds(pid) - start

    def per_write_ms(self) -> list[float]:
        return [s / max(1, self.writes) * 1e3 for s in self.seconds]


# ---------------------------------------------------------------------- the etcd cluster


class EtcdCluster:
    """Three etcd members on 127.0.0.1, mutual TLS for peers and clients, data on this disk."""

    def __init__(self, base: Path) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            sys.exit("bench_etcd_reference: no etcd binary; install it with: apt-get install etcd-server")
        self.certs = make_certs(base)
        self.members = [
            {
                "name": f"e{i}",
                "client": bench_ha.free_port("127.0.0.1"),
                "peer": bench_ha.free_port("127.0.0.1"),
            }
            for i in (1, 2, 3)
        ]
        initial = ",".join(f"{m['name']}=https://127.0.0.1:{m['peer']}" for m in self.members)
        tls = [
            f"--cert-file={self.certs['cert']}",
            f"--key-file={self.certs['key']}",
            f"--trusted-ca-file={self.certs['ca']}",
            "--client-cert-auth",
            f"--peer-cert-file={self.certs['cert']}",
            f"--peer-key-file={self.certs['key']}",
            f"--peer-trusted-ca-file={self.certs['ca']}",
            "--peer-client-cert-auth",
        ]
        self.procs: list[subprocess.Popen[bytes]] = []
        for m in self.members:
            log = open(base / f"{m['name']}.log", "wb")
            self.procs.append(
                subprocess.Popen(
                    [
                        binary,
                        f"--name={m['name']}",
                        f"--data-dir={base / m['name']}",
                        f"--listen-client-urls=https://127.0.0.1:{m['client']}",
                        f"--advertise-client-urls=https://127.0.0.1:{m['client']}",
                        f"--listen-peer-urls=https://127.0.0.1:{m['peer']}",
                        f"--initial-advertise-peer-urls=https://127.0.0.1:{m['peer']}",
                        f"--initial-cluster={initial}",
                        "--initial-cluster-state=new",
                        "--initial-cluster-token=bench",
                        *tls,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def addr(self, i: int) -> str:
        return f"127.0.0.1:{self.members[i]['client']}"

    def leader(self) -> str:
        """The client address of the leader (from Maintenance.Status), waiting for one."""

        def find() -> str | None:
            for i in range(3):
                raw = self._call(self.addr(i), STATUS, b"")
                if raw is None:
                    continue
                fields = _fields(raw)
                header = _fields(fields.get(1, b""))
                if fields.get(4) and fields.get(4) == header.get(2):
                    return self.addr(i)
            return None

        leader: str = bench_ha.wait(find, 60, "an etcd leader")
        return leader

    def _call(self, addr: str, method: str, request: bytes) -> bytes | None:
        import grpc

        creds = grpc.ssl_channel_credentials(
            self.certs["ca"].read_bytes(), self.certs["key"].read_bytes(), self.certs["cert"].read_bytes()
        )
        with grpc.secure_channel(addr, creds) as channel:
            try:
                response: bytes = channel.unary_unary(method)(request, timeout=2)
                return response
            except grpc.RpcError:
                return None

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _etcd_client_process(
    cluster: EtcdCluster,
    addr: str,
    ops: int,
    concurrency: int,
    env: dict[str, str] | None = None,
    blocking: bool = False,
) -> list[float]:
    """Run ``--etcd-client`` in a fresh process; returns what it printed (JSON numbers)."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--etcd-client",
            addr,
            "--ops",
            str(ops),
            "--concurrency",
            str(concurrency),
            "--certs",
            str(cluster.certs["ca"].parent),
            *(["--etcd-blocking"] if blocking else []),
        ],
        env=env,
        capture_output=True,
        check=True,
        timeout=600,
    )
    numbers: list[float] = json.loads(out.stdout)
    return numbers


def etcd_round(cluster: EtcdCluster, addr: str, ops: int, engine: str, blocking: bool = False) -> list[float]:
    """One round of sequential puts from a fresh client process (``--etcd-client``); ``blocking``:
    gRPC's blocking API instead of grpc.aio (see ``etcd_blocking_client``)."""
    env = dict(os.environ)
    env.pop("GRPC_EXPERIMENTS", None)
    if engine == "classic":
        env["GRPC_EXPERIMENTS"] = CLASSIC_IO
    return _etcd_client_process(cluster, addr, ops, 1, env, blocking=blocking)


def etcd_blocking_client(addr: str, ops: int, certs: Path, warmup: int = 50) -> None:
    """Puts over one mTLS channel with gRPC's blocking API; prints the latencies (JSON).

    The client of the same kind as shoal's in this bench (``shoal.client.Client``: a blocking
    call on one kept connection, no event loop). A grpc.aio call's answer wakes gRPC's poller
    thread and then the event loop; a blocking call's wakes the calling thread alone (with
    the classic poller it polls gRPC's sockets itself)."""
    import grpc

    creds = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(), (certs / "key.pem").read_bytes(), (certs / "cert.pem").read_bytes()
    )
    samples = []
    with grpc.secure_channel(addr, creds) as channel:
        put = channel.unary_unary(KV_PUT)
        for i in range(warmup + ops):
            request = put_request(b"bench-key", f"{i:016d}".encode())
            start = time.perf_counter()
            put(request, timeout=10)
            if i >= warmup:
                samples.append(time.perf_counter() - start)
    print(json.dumps(samples))


def etcd_client(addr: str, ops: int, certs: Path, warmup: int = 50, concurrency: int = 1) -> None:
    """Puts over one grpc.aio mTLS channel; prints the latencies (JSON). With ``concurrency`` > 1,
    that many coroutines share the channel (etcd's own throughput figures are measured so) and
    the elapsed time comes first: ``[elapsed, latency, ...]``."""
    import asyncio

    import grpc

    async def run() -> list[float]:
        creds = grpc.ssl_channel_credentials(
            (certs / "ca.pem").read_bytes(),
            (certs / "key.pem").read_bytes(),
            (certs / "cert.pem").read_bytes(),
        )
        async with grpc.aio.secure_channel(addr, creds) as channel:
            put = channel.unary_unary(KV_PUT)
            samples = []
            if concurrency > 1:
                return await concurrent_puts(put, ops, concurrency)
            for i in range(warmup + ops):
                request = put_request(b"bench-key", f"{i:016d}".encode())
                start = time.perf_counter()
                await put(request, timeout=10)
                if i >= warmup:
                    samples.append(time.perf_counter() - start)
            return samples

    print(json.dumps(asyncio.run(run())))


async def concurrent_puts(put: Any, ops: int, concurrency: int) -> list[float]:
    """``ops`` puts from ``concurrency`` coroutines (after one warm-up put each)."""
    import asyncio

    await asyncio.gather(*(put(put_request(b"warm", b"0"), timeout=30) for _ in range(concurrency)))
    counter = iter(range(ops))
    samples: list[float] = []

    async def worker(w: int) -> None:
        for i in counter:
            start = time.perf_counter()
            await put(put_request(f"bench-key-{w}".encode(), f"{i:016d}".encode()), timeout=30)
            samples.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return [time.perf_counter() - start, *samples]


def etcd_throughput(cluster: EtcdCluster, addr: str, ops: int, concurrency: int) -> tuple[float, list[float]]:
    """``ops`` puts from ``concurrency`` coroutines over one channel, in a fresh client process."""
    elapsed, *samples = _etcd_client_process(cluster, addr, ops, concurrency)
    return float(elapsed), samples


async def _shoal_kept_throughput(path: str, ops: int, concurrency: int) -> tuple[float, list[float]]:
    """``ops`` ``node.update`` writes from ``concurrency`` coroutines, each over its own kept
    local-API connection (as etcd's client keeps its channel)."""
    import asyncio

    counter = iter(range(ops))
    samples: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            for i in counter:
                line = json.dumps(
                    {"method": "node.update", "params": {"node": "self", "label_add": [f"k=t{i}"]}}
                )
                start = time.perf_counter()
                writer.write(line.encode() + b"\n")
                answer = json.loads(await reader.readline())
                if "error" in answer:
                    raise SystemExit(f"shoal write failed: {answer['error']}")
                samples.append(time.perf_counter() - start)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, samples


def shoal_throughput(node: bench_ha.Node, ops: int, concurrency: int) -> tuple[float, list[float]]:
    import asyncio

    return asyncio.run(_shoal_kept_throughput(str(node.sock), ops, concurrency))


def _store_counters(node: bench_ha.Node) -> tuple[int, int]:
    """The leader's (commit index, WAL fsyncs): how many Raft entries and fsyncs a round cost."""
    info = node.info() or {}
    store = info.get("Store", {})
    return int(store.get("commit_index", 0)), int(store.get("wal_syncs", 0))


def throughput_rounds(
    etcd: EtcdCluster, etcd_leader: str, shoal_leader: bench_ha.Node, ops: int, concurrency: int, rounds: int
) -> None:
    """The systems take turns; prints one line per round and the medians of the rates. shoal is
    measured twice: each writer over its own kept connection (as etcd's coroutines share one
    kept channel), and with a new connection per write (``bench_ha.py``'s throughput)."""
    names = ("shoal, kept connections", "shoal, a new connection per write", "etcd 3.4, one channel")
    rates: dict[str, list[float]] = {name: [] for name in names}
    medians: dict[str, list[float]] = {name: [] for name in names}
    costs: list[str] = []
    shoal_throughput(shoal_leader, min(ops, 500), concurrency)  # warm-up
    for r in range(rounds):
        entries0, syncs0 = _store_counters(shoal_leader)
        kept = shoal_throughput(shoal_leader, ops, concurrency)
        entries1, syncs1 = _store_counters(shoal_leader)
        costs.append(f"{entries1 - entries0} entries, {syncs1 - syncs0} leader fsyncs")
        elapsed, samples, errors = bench_ha.throughput([shoal_leader], concurrency, ops)
        if errors:
            print(f"  shoal (new connections) errors: {errors}", flush=True)
        fresh = (elapsed, samples)
        etcd_run = etcd_throughput(etcd, etcd_leader, ops, concurrency)
        line = [f"throughput round {r + 1}:"]
        for name, (el, samp) in zip(names, (kept, fresh, etcd_run), strict=True):
            rates[name].append(len(samp) / el)
            medians[name].append(statistics.median(samp) * 1e3)
            line.append(f"{name} {rates[name][-1]:,.0f}/s (p50 {medians[name][-1]:.1f} ms);")
        line.append(f"shoal kept: {costs[-1]} for {ops} writes")
        print(" ".join(line), flush=True)
    print()
    print(f"| {concurrency} writers in flight, via the leader | median rate | rounds | p50 per round |")
    print("|---|---|---|---|")
    for name in names:
        print(
            f"| {name} | {statistics.median(rates[name]):,.0f}/s | "
            f"{', '.join(f'{v:,.0f}' for v in rates[name])} | {', '.join(f'{v:.1f}' for v in medians[name])} ms |"
        )
    etcd_name = names[-1]
    for name in names[:-1]:
        ratios = [a / b for a, b in zip(rates[name], rates[etcd_name], strict=True)]
        print(f"{name} / etcd per round: {', '.join(f'{x:.2f}' for x in ratios)}")


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=600, help="writes per round per system")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--only", default="latency,throughput", help="comma-separated subset of: latency, throughput"
    )
    parser.add_argument("--concurrency", type=int, default=256, help="writers in flight (throughput)")
    parser.add_argument("--throughput-ops", type=int, default=5000, help="writes per throughput round")
    parser.add_argument(
        "--with-serving-thread",
        action="store_true",
        help="latency: also a second shoal swarm with transport.serving-thread=on, in the same rounds",
    )
    parser.add_argument(
        "--second-swarm",
        metavar="OPT",
        help="latency: also a second shoal swarm with --plugin-opt OPT, in the same rounds",
    )
    parser.add_argument("--etcd-client", help=argparse.SUPPRESS)
    parser.add_argument("--etcd-blocking", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--certs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.etcd_client and args.etcd_blocking:
        etcd_blocking_client(args.etcd_client, args.ops, Path(args.certs))
        return
    if args.etcd_client:
        etcd_client(args.etcd_client, args.ops, Path(args.certs), concurrency=args.concurrency)
        return
    only = set(args.only.split(","))
    if only - {"latency", "throughput"}:
        parser.error(f"unknown --only part(s): {', '.join(sorted(only - {'latency', 'throughput'}))}")

    print(f"machine: {bench_ha.machine()}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="shoal-bench-etcd-"))
    etcd = EtcdCluster(base)
    swarm = bench_ha.Cluster()
    threaded: bench_ha.Cluster | None = None
    try:
        second = args.second_swarm or ("transport.serving-thread=on" if args.with_serving_thread else "")
        if second:
            threaded = bench_ha.Cluster(daemon_args=("--plugin-opt", second))
        etcd_leader = etcd.leader()
        shoal_leader = swarm.leader()
        print(f"1-minute load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
        if "throughput" in only:
            throughput_rounds(
                etcd, etcd_leader, shoal_leader, args.throughput_ops, args.concurrency, args.rounds
            )
        if "latency" not in only:
            print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")
            return
        client = shoal_leader.kept_client()
        ordered = [shoal_leader, *(n for n in swarm.nodes if n is not shoal_leader)]
        shoal_pids = [n.proc.pid for n in ordered if n.proc is not None]
        shoal_cpu, etcd_cpu = CPUMeter(shoal_pids), CPUMeter([p.pid for p in etcd.procs])
        results: dict[str, list[float]] = {
            "shoal": [],
            "etcd (gRPC default engine)": [],
            "etcd (classic engine)": [],
            "etcd (blocking client, classic engine)": [],
        }
        threaded_leader = threaded.leader() if threaded is not None else None
        threaded_client = threaded_leader.kept_client() if threaded_leader is not None else None
        threaded_results: list[float] = []
        threaded_cpu: CPUMeter | None = None
        if threaded is not None and threaded_leader is not None:
            pids = [threaded_leader, *(n for n in threaded.nodes if n is not threaded_leader)]
            threaded_cpu = CPUMeter([n.proc.pid for n in pids if n.proc is not None])
        for r in range(args.rounds):

            def first_swarm() -> list[float]:
                with shoal_cpu:
                    samples = bench_ha.latency(shoal_leader, args.ops, client)
                shoal_cpu.writes += args.ops + 20  # bench_ha.latency's warm-up writes
                return samples

            def second_swarm(r: int = r) -> None:
                if threaded_leader is None or threaded_cpu is None:
                    return
                with threaded_cpu:
                    with_thread = bench_ha.latency(threaded_leader, args.ops, threaded_client)
                threaded_cpu.writes += args.ops + 20
                threaded_results.extend(with_thread)
                print(
                    f"round {r + 1}: shoal with {second} {statistics.median(with_thread) * 1e3:.2f} ms",
                    flush=True,
                )

            # The two swarms take turns going first, so that neither always follows etcd's
            # round and shares the machine with its aftermath (a client process ending, etcd's
            # own work).
            if r % 2 == 0:
                shoal = first_swarm()
                second_swarm()
            else:
                second_swarm()
                shoal = first_swarm()
            with etcd_cpu:
                default = etcd_round(etcd, etcd_leader, args.ops, "default")
                classic = etcd_round(etcd, etcd_leader, args.ops, "classic")
                blocking = etcd_round(etcd, etcd_leader, args.ops, "classic", blocking=True)
            etcd_cpu.writes += 3 * (args.ops + 50)  # the etcd clients' warm-up puts
            for name, samples in zip(results, (shoal, default, classic, blocking), strict=True):
                results[name] += samples
            print(
                f"round {r + 1}: shoal {statistics.median(shoal) * 1e3:.2f} ms, etcd "
                f"{statistics.median(default) * 1e3:.2f} / {statistics.median(classic) * 1e3:.2f} / "
                f"{statistics.median(blocking) * 1e3:.2f} ms (default / classic engine / blocking client)",
                flush=True,
            )
        print()
        print("| one write at a time, via the leader, one connection | median | p99 |")
        print("|---|---|---|")
        if threaded_results:
            results[f"shoal ({second})"] = threaded_results
        for name, samples in results.items():
            samples_ms = [s * 1e3 for s in samples]
            print(
                f"| {name} | {statistics.median(samples_ms):.2f} ms | {bench_ha.pct(samples_ms, 0.99):.2f} ms |"
            )
        leader_ms, *follower_ms = shoal_cpu.per_write_ms()
        print(
            f"\nserver CPU per write: shoal leader {leader_ms:.2f} ms, followers "
            + " / ".join(f"{f:.2f}" for f in follower_ms)
            + " ms; etcd members "
            + " / ".join(f"{e:.2f}" for e in etcd_cpu.per_write_ms())
            + " ms"
        )
        if threaded_cpu is not None:
            leader_ms, *follower_ms = threaded_cpu.per_write_ms()
            print(
                f"server CPU per write, shoal ({second}): leader {leader_ms:.2f} ms, followers "
                + " / ".join(f"{f:.2f}" for f in follower_ms)
                + " ms"
            )
        print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        swarm.close()
        if threaded is not None:
            threaded.close()
        etcd.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
