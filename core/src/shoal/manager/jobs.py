"""Swarm jobs: services whose tasks run to completion (``replicated-job`` and ``global-job``).

The replicated orchestrator hands job services here. A job's tasks are wanted running until
they exit; one that exits 0 is marked desired ``COMPLETE`` and never replaced, one that fails is
restarted in its slot by the orchestrator's restart supervisor (per the restart policy, which
the CLI defaults to on-failure for jobs, as docker does). A replicated job keeps at most
``max_concurrent`` tasks active until ``total_completions`` slots have completed; a global job
runs one task to completion on every eligible node, nodes that join later included.

Every change of a job's spec (``update --force`` included) starts a new *iteration*
(``Service.job_status.job_iteration``, stamped on each task as ``Task.job_iteration``): the
tasks of older iterations that still run are shut down and the job runs again from zero, as
Swarm's JobIteration does. Jobs have no rolling update.

Active tasks keep desired state RUNNING (not Swarm's COMPLETE) so that the scheduler, the
network state and placement, which count desired-RUNNING tasks, treat them as any other task.
"""

from __future__ import annotations

import time
from collections import defaultdict

from shoal import states
from shoal.manager.tasks import new_task
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import Tx, copy

JOB_MODES = ("replicated_job", "global_job")


def is_job(service: pb.Service) -> bool:
    return service.spec.WhichOneof("mode") in JOB_MODES


def is_global_job(service: pb.Service) -> bool:
    return service.spec.WhichOneof("mode") == "global_job"


def max_concurrent(spec: pb.ServiceSpec) -> int:
    """Tasks a replicated job may run at once (0 means 1, as Swarm)."""
    return max(1, int(spec.replicated_job.max_concurrent))


def start_iteration(service: pb.Service) -> None:
    """A job service was created or changed: its next run (call inside the writing transaction)."""
    if is_job(service):
        service.job_status.job_iteration += 1
        service.job_status.last_execution = time.time()


def job_task(service: pb.Service, slot: int, desired: int = states.RUNNING) -> pb.Task:
    task = new_task(service, slot, desired=desired)
    task.job_iteration = service.job_status.job_iteration
    return task


def active(task: pb.Task) -> bool:
    """Wanted running (or about to be, after a restart delay) and not finished yet."""
    return task.desired_state <= states.RUNNING


def finished(tx: Tx, task: pb.Task) -> None:
    """A job task exited 0: it is done for good (desired COMPLETE: never restarted, and the
    reaper keeps it as history)."""
    task = copy(task)
    task.desired_state = states.COMPLETE
    tx.update(task)


def reconcile(tx: Tx, service: pb.Service, fit: set[str], open_: set[str]) -> None:
    """Create the tasks the job's current iteration still needs; stop older iterations'.

    For a global job: ``fit`` are the nodes that may keep its task (up, not drained, meeting
    its constraints), ``open_`` those of them that may get a new one (not paused).
    """
    iteration = service.job_status.job_iteration
    current: list[pb.Task] = []
    for stored in tx.view.service_tasks(service.id):
        task = tx.task(stored.id)
        if task is None:
            continue
        if task.job_iteration != iteration:
            if active(task):
                _shutdown(tx, task)
            continue
        current.append(task)
    if is_global_job(service):
        _reconcile_global(tx, service, current, fit, open_)
    else:
        _reconcile_replicated(tx, service, current)


def _reconcile_replicated(tx: Tx, service: pb.Service, current: list[pb.Task]) -> None:
    """Slots 1..total_completions; a slot is taken once any task of this iteration ran in it
    (a slot whose task failed past its restart attempts stays failed, as in Swarm)."""
    total = int(service.spec.replicated_job.total_completions)
    used = {task.slot for task in current}
    running = {task.slot for task in current if active(task)}
    free = [slot for slot in range(1, total + 1) if slot not in used]
    room = max_concurrent(service.spec) - len(running)
    for slot in free[: max(0, room)]:
        tx.create(job_task(service, slot))


def _reconcile_global(
    tx: Tx, service: pb.Service, current: list[pb.Task], fit: set[str], open_: set[str]
) -> None:
    by_node: dict[str, list[pb.Task]] = defaultdict(list)
    for task in current:
        by_node[task.node_id].append(task)
        if task.node_id not in fit and active(task):
            _shutdown(tx, task)
    for node_id in open_:
        if not by_node.get(node_id):
            task = job_task(service, 0)
            task.node_id = node_id
            task.annotations.name = f"{service.spec.annotations.name}.{node_id}"
            tx.create(task)


def replacement(service: pb.Service, failed: pb.Task) -> pb.Task:
    """The restart of a failed job task: same slot (or node), same iteration, desired READY
    until its restart delay ends."""
    task = job_task(service, failed.slot, desired=states.READY)
    task.job_iteration = failed.job_iteration
    if failed.slot == 0:
        task.node_id = failed.node_id
        task.annotations.name = failed.annotations.name
    return task


def _shutdown(tx: Tx, task: pb.Task) -> None:
    task = copy(task)
    task.desired_state = states.SHUTDOWN
    tx.update(task)


#: ``service ls`` MODE for the job modes, as docker prints it.
MODE_WORDS = {"replicated_job": "replicated job", "global_job": "global job"}


def counts(service: pb.Service, tasks: list[pb.Task]) -> tuple[int, int, str]:
    """``service ls`` for a job: running, desired and docker's REPLICAS text
    ``running/desired (completed/total completed)``, over the current iteration's tasks.

    Desired counts the tasks still to finish, so for a global job (whose total is the nodes
    it ran on) the total is desired + completed, as docker computes it.
    """
    iteration = service.job_status.job_iteration
    current = [t for t in tasks if t.job_iteration == iteration]
    # A task that exited is not counted as wanted even before the orchestrator marks it.
    to_finish = [t for t in current if active(t) and not states.is_terminal(t.status.state)]
    running = sum(1 for t in to_finish if t.status.state == states.RUNNING)
    desired = len(to_finish)
    completed = len({t.slot if t.slot else t.node_id for t in current if t.status.state == states.COMPLETE})
    if is_global_job(service):
        total = desired + completed
    else:
        total = int(service.spec.replicated_job.total_completions)
    return running, desired, f"{running}/{desired} ({completed}/{total} completed)"
