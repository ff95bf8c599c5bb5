"""Durability with real processes: SIGKILL a writer at random points, every ack must survive."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("raft_crash_child.py")
DEADLINE = 60.0


async def run_child(
    state_dir: Path,
    *,
    bootstrap: bool,
    tag: str,
    writers: int,
    count: int,
    interval: int,
    kill_after: int | None,
) -> tuple[dict[str, str], dict[str, str], bool]:
    """Run one child; SIGKILL it after ``kill_after`` acks. Returns (state at start, acks, finished)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(state_dir),
        "1" if bootstrap else "0",
        tag,
        str(writers),
        str(count),
        str(interval),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acks: dict[str, str] = {}
    state: dict[str, str] | None = None
    finished = False
    killed = False
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    break
                kind, _, rest = line.rstrip("\n").partition(" ")
                if kind == "STATE":
                    state = json.loads(rest)
                elif kind == "ACK":
                    key, value = rest.split(" ")
                    acks[key] = value
                elif kind == "DONE":
                    finished = True
                if not killed and kill_after is not None and state is not None and len(acks) >= kill_after:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True  # keep reading: lines already in the pipe were acknowledged too
            rc = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode()
    if killed:
        assert rc == -signal.SIGKILL, f"child died before the kill (rc {rc}):\n{stderr}"
    else:
        assert rc == 0, f"child failed (rc {rc}):\n{stderr}"
    assert state is not None, f"child never reported its state (rc {rc}):\n{stderr}"
    return state, acks, finished


@pytest.mark.parametrize(("seed", "interval"), [(11, 10000), (23, 37)])
async def test_sigkill_at_random_points_never_loses_an_acknowledged_write(
    tmp_path: Path, seed: int, interval: int
) -> None:
    """Each child writes far more than it can finish; the parent kills it after a random number
    of acks (0 = right after start), restarts it, and checks every ack so far is in the state."""
    rng = random.Random(seed)
    state_dir = tmp_path / "raft"
    acked: dict[str, str] = {}
    for iteration in range(8):
        writers = rng.choice([1, 8, 32])
        kill_after = rng.randrange(0, 400)
        state, acks, finished = await run_child(
            state_dir,
            bootstrap=iteration == 0,
            tag=f"i{iteration}",
            writers=writers,
            count=100_000,
            interval=interval,
            kill_after=kill_after,
        )
        assert not finished, "the child must be killed mid-burst"
        missing = {k: v for k, v in acked.items() if state.get(k) != v}
        assert not missing, (
            f"iteration {iteration}: acknowledged writes lost after SIGKILL: {sorted(missing)[:10]}"
        )
        assert len(acks) >= kill_after
        acked.update(acks)
    state, _, finished = await run_child(
        state_dir, bootstrap=False, tag="final", writers=1, count=0, interval=interval, kill_after=None
    )
    assert finished
    missing = {k: v for k, v in acked.items() if state.get(k) != v}
    assert not missing, f"acknowledged writes lost: {sorted(missing)[:10]}"
    assert len(acked) > 400
