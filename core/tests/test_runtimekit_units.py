"""Unit tests for the engine-independent helpers of the docker runtime (no engine needed)."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest
from shoal.proto import objects_pb2 as pb
from shoal.roles.runtime import RuntimeError_
from shoal.runtimekit import bridge as _bridge
from shoal.runtimekit import logs as _logs
from shoal.runtimekit import task as _task
from shoal.testing.runtime import eventually, make_task


def frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_container_name_follows_swarm() -> None:
    task = make_task("img", node_id="node1", service_name="web", slot=2)
    assert _task.container_name(task) == f"web.2.{task.id}"
    global_task = make_task("img", node_id="node1", service_name="web", slot=0)
    assert _task.container_name(global_task) == f"web.node1.{global_task.id}"


def test_shoal_labels_win_over_user_labels() -> None:
    task = make_task("img", node_id="n1", labels={"io.shoal.node.id": "forged", "team": "a"}, slot=4)
    labels = _task.labels(task)
    assert labels["io.shoal.node.id"] == "n1"
    assert labels["team"] == "a"
    assert labels["io.shoal.task.slot"] == "4"
    assert labels["io.shoal.task.id"] == task.id


def test_check_names_what_is_missing() -> None:
    with pytest.raises(RuntimeError_, match="no container image"):
        _task.check(make_task("", node_id="n1"))
    with pytest.raises(RuntimeError_, match="no node ID"):
        _task.check(make_task("img", node_id=""))


def test_limits_and_grace() -> None:
    assert _task.limits(make_task("img", node_id="n")) == (0, 0)
    assert _task.limits(make_task("img", node_id="n", nano_cpus=5, memory_bytes=7)) == (5, 7)
    assert _task.stop_seconds(-1) == 10
    assert _task.stop_seconds(0.2) == 1
    assert _task.stop_seconds(3) == 3


def test_arch_is_normalised_like_swarm() -> None:
    assert _task.normalise_arch("amd64") == "x86_64"
    assert _task.normalise_arch("arm64") == "aarch64"
    assert _task.normalise_arch("x86_64") == "x86_64"


def test_frames_become_lines_per_stream_with_timestamps() -> None:
    data = (
        frame(1, b"2024-01-02T03:04:05.123456789Z hello\n")
        + frame(2, b"2024-01-02T03:04:06Z oops\n")
        + frame(1, b"2024-01-02T03:04:07+00:00 par")
        + frame(1, b"tial\nlast-without-newline")
    )
    splitter = _logs.LineSplitter("t1")
    lines = []
    for stream, payload in _logs.read_frames(io.BytesIO(data).read):
        lines += splitter.feed(stream, payload)
    lines += splitter.flush()
    assert [(line.stream, line.text) for line in lines] == [
        ("stdout", "hello"),
        ("stderr", "oops"),
        ("stdout", "partial"),
        ("stdout", "last-without-newline"),
    ]
    assert lines[0].timestamp == pytest.approx(1704164645.123456)
    assert lines[1].timestamp == pytest.approx(1704164646.0)
    assert all(line.task_id == "t1" for line in lines)


def test_a_cut_frame_ends_the_stream() -> None:
    data = frame(1, b"whole\n") + frame(1, b"cut short")[:-3]
    assert [payload for _, payload in _logs.read_frames(io.BytesIO(data).read)] == [b"whole\n", b"cut sh"]


async def test_call_runs_off_the_loop_and_passes_errors() -> None:
    loop_thread = threading.get_ident()
    assert await _bridge.call(threading.get_ident) != loop_thread

    def boom() -> None:
        raise ValueError("engine said no")

    with pytest.raises(ValueError, match="engine said no"):
        await _bridge.call(boom)


async def test_cancelled_call_does_not_block_the_caller() -> None:
    release = threading.Event()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_bridge.call(release.wait, 30), 0.1)
    release.set()


async def test_pipe_producer_gives_up_once_the_consumer_stops() -> None:
    pipe = _bridge.Pipe(asyncio.get_running_loop(), limit=1)
    assert pipe.send("first")
    outcome: list[bool] = []
    producer = threading.Thread(target=lambda: outcome.append(pipe.send("second")))
    producer.start()  # blocks: no credit left
    pipe.stop()
    await asyncio.to_thread(producer.join, 5)
    assert outcome == [False]
    assert await pipe.receive() == "first"


def test_pull_policy_default_is_missing() -> None:
    assert make_task("img", node_id="n").spec.container.pull_policy == pb.ContainerSpec.PULL_MISSING


async def test_calls_run_in_at_most_max_threads_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 defect 3: a thread per call, unbounded, was a thread and an engine connection
    per task (10,000 replicas: 10,000 threads)."""
    monkeypatch.setattr(_bridge, "MAX_THREADS", 4)
    lock, running, peak = threading.Lock(), [0], [0]
    release = threading.Event()

    def engine_call() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(30)
        with lock:
            running[0] -= 1

    calls = [asyncio.ensure_future(_bridge.call(engine_call)) for _ in range(20)]
    abandoned = asyncio.ensure_future(_bridge.call(engine_call))

    async def four_running() -> bool:
        return running[0] >= 4

    await eventually(four_running, "four calls running")
    calls[0].cancel()  # its thread runs on: it keeps its place
    for _ in range(10):  # let a wrongly freed place go to a waiting call
        await asyncio.sleep(0)
    threads = [t for t in threading.enumerate() if t.name == "shoal-runtime-engine_call"]
    assert (len(threads), peak[0]) == (4, 4)
    abandoned.cancel()  # still queued: it never gets a thread
    release.set()
    await asyncio.wait_for(asyncio.gather(*calls[1:]), 10)
    assert peak[0] == 4 and running[0] == 0
