"""The cluster store through a real daemon: acknowledged writes survive SIGKILL and torn tails."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from harness import SHOAL, ShoalNode, wait_until
from shoal_store_raft.raft import HardState
from shoal_store_raft.wal import encode_hard_state

pytestmark = [pytest.mark.cluster]


def wal_segments(node: ShoalNode) -> list[Path]:
    return sorted((node.state_dir / "plugins" / "store-raft" / "wal").glob("*.wal"))


def service_names(node: ShoalNode) -> set[str]:
    return {row["Name"] for row in node.ok("service", "ls", "--format", "json").json_lines()}


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_during_burst_keeps_every_acknowledged_write(node_factory: object, seed: int) -> None:
    node: ShoalNode = node_factory()  # type: ignore[operator]
    node.start()
    node.init()
    rng = random.Random(seed)
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        index = 0
        while not stop.is_set():
            name = f"w{worker}-{index}"
            proc = subprocess.run(
                [
                    *SHOAL,
                    "service",
                    "create",
                    "--name",
                    name,
                    "--replicas",
                    "0",
                    "--detach",
                    "shoal-busybox:1",
                ],
                capture_output=True,
                text=True,
                env=node.env(),
                timeout=60,
            )
            if proc.returncode == 0:
                acknowledged.append(name)  # the daemon said it is committed
            elif stop.is_set():
                return
            index += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acknowledged) >= 5 + rng.randrange(10), 60, what="some acknowledged writes")
    node.kill()  # mid-burst: writers still have calls in flight
    stop.set()
    for thread in threads:
        thread.join(60)
    assert node.proc is not None and node.proc.returncode == -signal.SIGKILL

    node.start()
    names = service_names(node)
    missing = [name for name in acknowledged if name not in names]
    assert not missing, f"acknowledged writes lost after SIGKILL: {missing}"


def test_torn_tail_record_is_dropped_with_a_warning(node_factory: object) -> None:
    node: ShoalNode = node_factory()  # type: ignore[operator]
    node.start()
    node.init()
    for index in range(3):
        node.ok("service", "create", "--name", f"s{index}", "--replicas", "0", "--detach", "shoal-busybox:1")
    node.kill()
    segment = wal_segments(node)[-1]
    # A crash in the middle of writing a record leaves a prefix of it at the end of the log.
    record = encode_hard_state(HardState(99, 0, 0))
    segment.write_bytes(segment.read_bytes() + record[: len(record) // 2])
    node.start()
    assert {"s0", "s1", "s2"} <= service_names(node)
    wait_until(
        lambda: "torn" in node.log_text().lower() or "truncat" in node.log_text().lower(),
        10,
        what="a warning about the dropped tail record in the daemon log",
    )
    node.ok("service", "create", "--name", "after", "--replicas", "0", "--detach", "shoal-busybox:1")
    node.kill()
    node.start()
    assert {"s0", "s1", "s2", "after"} <= service_names(node)
