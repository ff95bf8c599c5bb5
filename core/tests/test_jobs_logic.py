"""Swarm jobs on a whole cluster in one process (``shoal.testing.cluster``, fake runtime).

The logic of ``shoal.manager.jobs``: completions counted and never replaced, ``--max-concurrent``
bounding the tasks at once, failed tasks retried per the restart policy, a global job on a
node that joins later, a re-run on ``update --force``, and the bad combinations refused. The
real-engine claims are in tests/test_jobs.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from shoal import dockershapes
from shoal.cli.inspect_pretty import service_pretty
from shoal.cli.progress import block_lines, job_progress
from shoal.daemon.localapi import APIError
from shoal.proto import objects_pb2 as pb
from shoal.specs import service_spec
from shoal.testing.cluster import InProcessCluster

IMAGE = "app:1"
QUICK = ["sh", "-c", "sleep 0.2; exit 0"]


async def ls_row(cluster: InProcessCluster, name: str) -> dict[str, Any]:
    rows = await cluster.call("service.ls")
    return next(row for row in rows if row["Name"] == name)


async def complete(cluster: InProcessCluster, name: str) -> list[dict[str, Any]]:
    return [t for t in await cluster.tasks(name) if t["State"] == "Complete"]


async def test_replicated_job_runs_to_its_completions_within_max_concurrent(tmp_path: Path) -> None:
    """5 completions, 2 at a time: never more than 2 run, all 5 complete, none is replaced,
    and ``service ls`` reads ``replicated job`` / ``0/0 (5/5 completed)``."""
    async with InProcessCluster(tmp_path, workers=1) as cluster:
        await cluster.call(
            "service.create",
            name="batch",
            image=IMAGE,
            args=QUICK,
            mode="replicated-job",
            replicas=5,
            max_concurrent=2,
        )
        most = 0

        async def all_complete() -> bool:
            nonlocal most
            tasks = await cluster.tasks("batch")
            most = max(most, sum(1 for t in tasks if t["State"] in ("Running", "Starting")))
            return len([t for t in tasks if (t["State"], t["DesiredState"]) == ("Complete", "Complete")]) == 5

        await cluster.wait_until(all_complete, "5 completions")
        assert most == 2, f"at most 2 tasks at once, and 2 did run together (saw {most})"
        tasks = await cluster.tasks("batch")
        assert sorted(t["Slot"] for t in tasks) == [1, 2, 3, 4, 5], tasks
        assert {t["DesiredState"] for t in tasks} == {"Complete"}, tasks
        row = await ls_row(cluster, "batch")
        assert (row["Mode"], row["Replicas"]) == ("replicated job", "0/0 (5/5 completed)")
        for _ in range(5):  # completed tasks stay completed: nothing new appears
            assert len(await cluster.tasks("batch")) == 5
        await cluster.call("service.create", name="web", image=IMAGE)
        jobs = await cluster.call("service.ls", filters=["mode=replicated-job"])
        assert [row["Name"] for row in jobs] == ["batch"]
        assert await cluster.call("service.ls", filters=["mode=global-job"]) == []


async def test_failed_job_task_is_retried_in_its_slot(tmp_path: Path) -> None:
    """A job's task that exits 1 is restarted (on-failure is a job's default) until its
    attempts run out; a task that exits 0 is not (restart condition any would restart it
    if it were a replicated service)."""
    async with InProcessCluster(tmp_path) as cluster:
        await cluster.call(
            "service.create",
            name="flaky",
            image=IMAGE,
            args=["sh", "-c", "exit 1"],
            mode="replicated-job",
            restart_delay="0s",
            restart_max_attempts=2,
        )

        async def three_failed() -> list[dict[str, Any]] | None:
            tasks = await cluster.tasks("flaky")
            failed = [t for t in tasks if t["State"] == "Failed"]
            return tasks if len(failed) == 3 and all(t["DesiredState"] == "Shutdown" for t in tasks) else None

        tasks = await cluster.wait_until(three_failed, "the first run and 2 retries to fail")
        assert {t["Slot"] for t in tasks} == {1}, tasks
        assert (await ls_row(cluster, "flaky"))["Replicas"] == "0/0 (0/1 completed)"

        await cluster.call(
            "service.create",
            name="once",
            image=IMAGE,
            args=QUICK,
            mode="replicated-job",
            restart_condition="any",
        )
        await cluster.wait_until(lambda: _len(complete(cluster, "once"), 1), "one completion")
        for _ in range(5):
            assert len(await cluster.tasks("once")) == 1, "a completed job task is never restarted"


async def test_global_job_runs_once_per_node_and_on_a_joining_node(tmp_path: Path) -> None:
    async with InProcessCluster(tmp_path, workers=1) as cluster:
        await cluster.call("service.create", name="everywhere", image=IMAGE, args=QUICK, mode="global-job")
        await cluster.wait_until(lambda: _len(complete(cluster, "everywhere"), 2), "a completion per node")
        row = await ls_row(cluster, "everywhere")
        assert (row["Mode"], row["Replicas"]) == ("global job", "0/0 (2/2 completed)")
        await cluster.join("w2")
        done = await cluster.wait_until(
            lambda: _len(complete(cluster, "everywhere"), 3), "the new node's run"
        )
        assert sorted(t["Node"] for t in done) == ["m1", "w1", "w2"]
        assert len(await cluster.tasks("everywhere")) == 3


async def test_update_force_runs_the_job_again(tmp_path: Path) -> None:
    async with InProcessCluster(tmp_path) as cluster:
        await cluster.call(
            "service.create", name="again", image=IMAGE, args=QUICK, mode="replicated-job", replicas=2
        )
        await cluster.wait_until(lambda: _len(complete(cluster, "again"), 2), "the first run")
        await cluster.call("service.update", service="again", force=True)
        await cluster.wait_until(lambda: _len(complete(cluster, "again"), 4), "the second run")
        assert (await ls_row(cluster, "again"))["Replicas"] == "0/0 (2/2 completed)"
        await cluster.call("service.scale", service="again", replicas=3)
        await cluster.wait_until(lambda: _len(complete(cluster, "again"), 7), "a run of 3 after the scale")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_concurrent": 2}, "--max-concurrent can only be used with replicated-job mode"),
        (
            {"mode": "global-job", "replicas": 2},
            "--replicas can only be used with replicated or replicated-job",
        ),
        (
            {"mode": "global-job", "max_concurrent": 2},
            "--max-concurrent can only be used with replicated-job",
        ),
        (
            {"mode": "replicated-job", "update_parallelism": 2},
            "--update-parallelism cannot be used with a job",
        ),
        ({"mode": "replicated-job", "rollback_delay": "1s"}, "--rollback-delay cannot be used with a job"),
        ({"mode": "replicated-job", "max_concurrent": 0}, "--max-concurrent"),
        ({"mode": "batch"}, "use replicated, global, replicated-job or global-job"),
    ],
)
async def test_bad_job_options_are_one_line_and_change_nothing(
    tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    async with InProcessCluster(tmp_path) as cluster:
        with pytest.raises(APIError) as refused:
            await cluster.call("service.create", name="bad", image=IMAGE, **params)
        assert message in refused.value.message and "\n" not in refused.value.message
        assert await cluster.call("service.ls") == []


async def test_scale_of_a_global_job_is_refused(tmp_path: Path) -> None:
    async with InProcessCluster(tmp_path) as cluster:
        await cluster.call("service.create", name="g", image=IMAGE, args=QUICK, mode="global-job")
        with pytest.raises(APIError) as refused:
            await cluster.call("service.scale", service="g", replicas=3)
        assert "scale can only be used with replicated or replicated-job mode" in refused.value.message


def _row(slot: int, state: str, desired: str, iteration: int = 1, error: str = "") -> dict[str, Any]:
    return {
        "Slot": slot, "NodeID": "n1", "State": state, "DesiredState": desired, "Error": error,
        "ServiceName": "batch", "Timestamp": float(slot), "JobIteration": iteration,
    }  # fmt: skip


def testjob_progress_counts_the_current_run_and_names_a_slot_that_gave_up() -> None:
    """The block ``service create`` draws for a job: ``job progress: C out of T complete``, a
    line per slot of the current iteration (older runs left out), and the slot whose task
    failed for good (nothing active, nothing complete)."""
    service = {
        "spec": {"replicated_job": {"total_completions": "3", "max_concurrent": "1"}},
        "job_status": {"job_iteration": "2"},
    }
    rows = [
        _row(1, "Complete", "Shutdown", iteration=1),
        _row(1, "Complete", "Complete", iteration=2),
        _row(2, "Failed", "Shutdown", iteration=2, error="task: non-zero exit (1)"),
        _row(2, "Running", "Running", iteration=2),
    ]
    progress, gave_up = job_progress(service, rows)
    lines = block_lines(progress, width=120, height=40)
    assert lines[0] == "job progress: 1 out of 3 complete"
    assert [line.split()[:2] for line in lines[1:]] == [["1/3:", "complete"], ["2/3:", "running"]]
    assert gave_up == ""
    rows[-1] = _row(2, "Failed", "Shutdown", iteration=2, error="task: non-zero exit (1)")
    assert job_progress(service, rows)[1] == "task batch.2: task: non-zero exit (1)"


async def _len(rows: Any, count: int) -> Any:
    found = await rows
    return found if len(found) == count else None


def test_inspect_shapes_of_a_job() -> None:
    """``service inspect`` shows docker's ``Spec.Mode.ReplicatedJob`` / ``GlobalJob``,
    ``JobStatus.JobIteration`` and a task's ``JobIteration``; ``--pretty`` names the mode."""
    spec = service_spec(
        {"name": "batch", "image": IMAGE, "mode": "replicated-job", "replicas": 4, "max_concurrent": 2}
    )
    service = pb.Service(id="s1", spec=spec)
    service.job_status.job_iteration = 3
    shape = dockershapes.service_shape(service)
    assert shape["Spec"]["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}}
    assert shape["JobStatus"]["JobIteration"] == {"Index": 3}
    assert "Service Mode:\tReplicated Job" in service_pretty(shape)
    assert dockershapes.task_shape(pb.Task(id="t1", job_iteration=3))["JobIteration"] == {"Index": 3}
    global_job = service_spec({"name": "g", "image": IMAGE, "mode": "global-job"})
    assert dockershapes.mode_shape(global_job) == {"GlobalJob": {}}
