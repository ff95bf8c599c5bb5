"""The etcd store beside the raft store: commit latency, leader failover, etcd quorum loss.

Starts three real etcd members (Debian's ``etcd-server``) on 127.0.0.1 with mutual TLS (the
store_etcd tests' harness) and three managers' ``EtcdStore`` providers in this process on one
prefix (as three manager daemons would run them), then measures at the provider, without the
daemon around it:

1. ``latency``: one ``propose`` at a time on the leader, until applied (etcd commit + watch).
2. ``failover``: the leader manager dies without a word (its lease is not revoked) -> the first
   ``propose`` accepted by a survivor; the dead manager is started again between repetitions.
3. ``compaction``: a snapshot every 100 entries compacts etcd; a follower restarted on it.
4. ``quorum``: two of the three etcd members killed -> the leader's ``propose`` refused, and
   the leader stepped down (the kernel's "no leader" answer from then on).

    .venv/bin/python bench/bench_store_etcd.py [--ops 500] [--reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from shoal.roles.store import StoreUnavailable
from shoal.testing.store import RecordingMachine
from shoal_store_etcd.client import Credentials
from shoal_store_etcd.options import EtcdOptions
from shoal_store_etcd.provider import EtcdStore
from shoal_store_etcd.testing import EtcdCluster


def options(etcd: EtcdCluster) -> EtcdOptions:
    f = etcd.client_files
    creds = Credentials(f.ca.read_bytes(), f.cert.read_bytes(), f.key.read_bytes())
    return EtcdOptions(tuple(etcd.endpoints), creds, "/bench")


async def until(condition: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


async def run(etcd: EtcdCluster, base: Path, ops: int, reps: int) -> None:
    opts = options(etcd)
    stores: dict[str, EtcdStore] = {}

    async def start(name: str, *, bootstrap: bool = False, join: bool = False) -> EtcdStore:
        store = EtcdStore(base / name, opts, node_id=name, addr=f"{name}:2377")
        await store.start(RecordingMachine(), bootstrap=bootstrap, join=join)
        stores[name] = store
        return store

    m1 = await start("m1", bootstrap=True)
    for name in ("m2", "m3"):
        await start(name, join=True)
        await m1.add_member(name, f"{name}:2377")

    def leader() -> EtcdStore | None:
        return next((s for s in stores.values() if s.is_leader()), None)

    lead = leader()
    assert lead is not None
    for i in range(50):
        await lead.propose(b"warm-%d" % i)
    samples = []
    for i in range(ops):
        began = time.perf_counter()
        await lead.propose(b"entry-%d" % i)
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    print(
        f"| etcd store, 3 managers on 3 etcd members: propose on the leader, 1 at a time ({ops}) | "
        f"median {statistics.median(samples):.2f} ms, p99 {samples[int(len(samples) * 0.99) - 1]:.2f} ms |"
    )

    # Snapshots and compaction: a snapshot every 100 entries, then a manager restarted on the
    # compacted history (snapshot + the entries after it).
    lead.tune({"snapshot_interval": 100})
    for i in range(250):
        await lead.propose(b"compact-%d" % i)
    await until(lambda: int(str(lead.status()["snapshot_index"])) > 0, 10)
    follower = next(n for n, s in stores.items() if s is not lead)
    await stores.pop(follower).stop()
    began = time.perf_counter()
    await start(follower)
    restart = (time.perf_counter() - began) * 1000
    applied = stores[follower].status()["applied_index"]
    print(
        f"| etcd store: follower restarted after compaction (snapshot at {lead.status()['snapshot_index']}, "
        f"applied {applied}) | {restart:.0f} ms |"
    )

    failovers = []
    for _ in range(reps):
        lead = leader()
        assert lead is not None
        name = lead.node_id
        began = time.monotonic()
        lead._lease = 0  # dies without revoking its lease, as a killed process would
        await lead.stop()
        del stores[name]
        while True:
            new = leader()
            if new is not None:
                try:
                    await new.propose(b"after-failover")
                    break
                except StoreUnavailable:
                    pass
            await asyncio.sleep(0.01)
        failovers.append(time.monotonic() - began)
        await start(name)
        await asyncio.sleep(1)
    print(
        f"| etcd store: leader manager killed -> first write accepted (n={reps}) | "
        f"{statistics.median(failovers):.2f} ({min(failovers):.2f}-{max(failovers):.2f}) s |"
    )

    lead = leader()
    assert lead is not None
    etcd.stop(1)
    etcd.stop(2)
    began = time.monotonic()
    try:
        await lead.propose(b"without quorum")
        refused = float("nan")
    except StoreUnavailable:
        refused = time.monotonic() - began
    await until(lambda: not lead.is_leader(), 30)
    stepped = time.monotonic() - began
    print(f"| etcd store: 2 of 3 etcd members killed -> write refused | {refused:.2f} s |")
    print(
        f"| etcd store: 2 of 3 etcd members killed -> leader stepped down (kernel: no leader) | {stepped:.2f} s |"
    )
    for store in stores.values():
        store._lease = 0
        await store.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=500)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-etcd-") as tmp:
        base = Path(tmp)
        etcd = EtcdCluster(base / "etcd")
        try:
            etcd.wait_ready()
            asyncio.run(run(etcd, base, args.ops, args.reps))
        finally:
            etcd.close()
    print(f"command: .venv/bin/python bench/bench_store_etcd.py --ops {args.ops} --reps {args.reps}")


if __name__ == "__main__":
    main()
