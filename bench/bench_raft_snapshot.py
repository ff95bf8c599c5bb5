"""A Raft snapshot of a large store, in one process: how long it holds the event loop.

A one-member ``RaftStore`` on real files drives an ``ObjectStore`` loaded with ``--tasks``
running tasks on ``--nodes`` nodes (put straight into the view: the log does not hold them,
which the snapshot does not look at). One node write is committed every ``--write-ms`` while
the snapshot is taken, as the dispatcher's status flushes would. Measured, per snapshot:

- the longest stall of the loop: how late a 5 ms timer fired (wall clock), and the loop
  thread's CPU between a timer's start and its firing (what held the loop, whatever the
  machine's load);
- the time until the snapshot is durable and the WAL compacted, and the writes' latency
  meanwhile;
- the file's size, and what a restart's restore costs (``ObjectStore.restore`` at once);
- a follower of a three-member group given that snapshot by its leader: the longest stall
  until it acknowledges it (durable and loaded). ``--sealed``: files encrypted at rest, as a
  manager daemon's are.

    .venv/bin/python bench/bench_raft_snapshot.py [--tasks 100000] [--nodes 1000] [--reps 3]

Run it against another tree with ``PYTHONPATH=<tree>/core/src:<tree>/plugins/store_raft/src``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from shoal import states
from shoal.gcpolicy import NO_AUTOMATIC_FULL_COLLECTION
from shoal.manager.tasks import new_task, task_template
from shoal.proto import objects_pb2 as pb
from shoal.statekeys import Sealer, new_key
from shoal.store.memory import ObjectStore, Tx, copy
from shoal_store_raft import RaftStore, snapfile
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.provider import MEMBER_FILE, format_id
from shoal_store_raft.raft import HardState, Message, MsgType, Snapshot, SnapshotChunk, SnapshotMeta
from shoal_store_raft.wal import WAL


def load(store: ObjectStore, tasks: int, nodes: int) -> list[str]:
    """Running tasks spread over ready nodes, as after a big create; returns the node IDs."""
    view = store.view
    node_ids = []
    for i in range(nodes):
        node = pb.Node(id=secrets.token_hex(12))
        node.description.hostname = f"hollow-{i}"
        node.status.state = pb.NodeStatus.READY
        node.status.addr = f"10.0.{i // 250}.{i % 250}"
        view.put("node", node)
        node_ids.append(node.id)
    service = pb.Service(id="svc" + "x" * 22)
    service.spec.annotations.name = "web"
    service.spec.task.container.image = "app:1"
    service.spec.replicated.replicas = tasks
    view.put("service", service)
    template = task_template(service, states.RUNNING)
    now = time.time()
    for slot in range(1, tasks + 1):
        task = new_task(service, slot, template=template)
        task.node_id = node_ids[slot % nodes]
        task.status.state = states.RUNNING
        task.status.message = "started"
        task.status.container.container_id = secrets.token_hex(32)
        task.meta.created_at = task.meta.updated_at = now
        view.put("task", task)
    return node_ids


class Probe:
    """The longest stall since ``reset``: wall lateness and loop-thread CPU per 5 ms timer."""

    def __init__(self) -> None:
        self.late = 0.0
        self.cpu = 0.0
        self._done = False

    def reset(self) -> None:
        self.late = self.cpu = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._done:
            asked, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(0.005)
            self.late = max(self.late, loop.time() - asked - 0.005)
            self.cpu = max(self.cpu, time.thread_time() - cpu)

    def stop(self) -> None:
        self._done = True


async def one_snapshot(
    raft: RaftStore, store: ObjectStore, node_ids: list[str], write_ms: float, snapshot: bool = True
) -> dict[str, float]:
    probe = Probe()
    prober = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)
    probe.reset()
    before = raft.status()["snapshot_index"]
    latencies: list[float] = []
    stop_writes = False

    async def writer() -> None:
        n = 0
        while not stop_writes:
            node_id = node_ids[n % len(node_ids)]
            n += 1

            def touch(tx: Tx, node_id: str = node_id, beat: int = n) -> None:
                current = tx.node(node_id)
                assert current is not None
                node = copy(current)
                node.status.message = f"beat {beat}"
                tx.update(node)

            started = time.perf_counter()
            await store.update(touch)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(write_ms / 1000)

    writes = asyncio.create_task(writer())
    await asyncio.sleep(0.05)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if snapshot:
        raft._take_snapshot()
        while raft.status()["snapshot_index"] == before:  # noqa: ASYNC110 # the provider has no event for it
            await asyncio.sleep(0.001)
    else:
        await asyncio.sleep(0.3)  # the same writes and probe, no snapshot: the machine's own noise
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    await asyncio.sleep(0.05)
    stop_writes = True
    await writes
    probe.stop()
    await prober
    return {
        "stall_ms": probe.late * 1000,
        "stall_cpu_ms": probe.cpu * 1000,
        "durable_ms": wall * 1000,
        "cpu_ms": cpu * 1000,
        "writes": len(latencies),
        "write_max_ms": max(latencies) * 1000 if latencies else 0.0,
        "write_median_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
    }


async def install(state: Path, snap: Snapshot, sealer: Sealer | None) -> dict[str, float]:
    """A follower of a three-member group given ``snap`` by its leader (one chunk): how long
    its loop is held until it acknowledges it."""
    me, leader = 0x1234, 0x2
    WAL.create(state / "wal", SnapshotMeta(0, 0, (me, leader, 0x3)), HardState(), sealer=sealer).close()
    (state / MEMBER_FILE).write_text(json.dumps({"raft_id": format_id(me)}))
    acked = asyncio.Event()

    def send(messages: Sequence[Message]) -> None:
        if any(m.type == MsgType.APP_RESP and m.index == snap.meta.index for m in messages):
            acked.set()

    follower = RaftStore(state, RaftOptions(tick_ms=60_000), send=send, sealer=sealer)
    await follower.start(ObjectStore(), bootstrap=False)
    probe = Probe()
    prober = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)
    probe.reset()
    meta = SnapshotMeta(snap.meta.index, snap.meta.term, (me, leader, 0x3))
    wall0 = time.perf_counter()
    follower.step(
        Message(
            MsgType.SNAP,
            me,
            leader,
            snap.meta.term,
            snapshot=SnapshotChunk(meta, 0, snap.data, len(snap.data)),
        )
    )
    await acked.wait()
    wall = time.perf_counter() - wall0
    await asyncio.sleep(0.05)
    probe.stop()
    await prober
    await follower.stop()
    return {"stall_ms": probe.late * 1000, "stall_cpu_ms": probe.cpu * 1000, "durable_ms": wall * 1000}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--write-ms", type=float, default=5.0, help="pause between two node writes")
    parser.add_argument("--dir", default=None, help="state directory (default: a temporary one on disk)")
    parser.add_argument("--sealed", action="store_true", help="encrypt at rest, as a manager daemon does")
    args = parser.parse_args()
    print(f"pid {os.getpid()}, load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir or "/var/tmp") as tmp:
        state = Path(tmp)
        store = ObjectStore()
        sealer = Sealer(new_key()) if args.sealed else None
        raft = RaftStore(state, RaftOptions(snapshot_interval=1_000_000_000), sealer=sealer)
        store.provider = raft
        await raft.start(store, bootstrap=True)
        node_ids = load(store, args.tasks, args.nodes)
        # As the daemon's collector policy: the loaded store frozen, and no automatic full
        # collection (its own, every few seconds, is not the snapshot's to measure).
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, NO_AUTOMATIC_FULL_COLLECTION)
        quiet = await one_snapshot(raft, store, node_ids, args.write_ms, snapshot=False)
        print(
            f"no snapshot, 0.3 s: longest stall {quiet['stall_ms']:.0f} ms (loop CPU {quiet['stall_cpu_ms']:.0f} ms)",
            flush=True,
        )
        for rep in range(args.reps):
            result = await one_snapshot(raft, store, node_ids, args.write_ms)
            print(
                f"snapshot {rep + 1}: longest stall {result['stall_ms']:.0f} ms "
                f"(loop CPU {result['stall_cpu_ms']:.0f} ms), durable after {result['durable_ms']:.0f} ms, "
                f"process CPU {result['cpu_ms']:.0f} ms; {result['writes']:.0f} writes meanwhile, "
                f"median {result['write_median_ms']:.1f} ms, max {result['write_max_ms']:.0f} ms",
                flush=True,
            )
        snap = snapfile.load_latest(state / "snap", sealer)
        assert snap is not None
        await raft.stop()
        print(f"snapshot file: {len(snap.data) / 1e6:.1f} MB at index {snap.meta.index}")
        restored = ObjectStore()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        restored.restore(snap.meta.index, snap.data)
        print(
            f"restore at once (a restart's): {(time.perf_counter() - wall0) * 1000:.0f} ms, "
            f"CPU {(time.process_time() - cpu0) * 1000:.0f} ms; {len(restored.view.tasks)} tasks"
        )
        for rep in range(args.reps):
            result = await install(state / f"follower{rep}", snap, sealer)
            print(
                f"a follower's install {rep + 1}: longest stall {result['stall_ms']:.0f} ms "
                f"(loop CPU {result['stall_cpu_ms']:.0f} ms), acknowledged after {result['durable_ms']:.0f} ms",
                flush=True,
            )
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
