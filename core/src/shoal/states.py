"""Task states in Swarm's numeric order, and the questions every component asks of them."""

from __future__ import annotations

from shoal.proto import objects_pb2 as pb

NEW = pb.NEW
PENDING = pb.PENDING
ASSIGNED = pb.ASSIGNED
ACCEPTED = pb.ACCEPTED
PREPARING = pb.PREPARING
READY = pb.READY
STARTING = pb.STARTING
RUNNING = pb.RUNNING
COMPLETE = pb.COMPLETE
SHUTDOWN = pb.SHUTDOWN
FAILED = pb.FAILED
REJECTED = pb.REJECTED
REMOVE = pb.REMOVE
ORPHANED = pb.ORPHANED


def name(state: int) -> str:
    """``RUNNING`` -> ``Running`` as docker prints it."""
    return str(pb.TaskState.Name(state)).capitalize()  # type: ignore[arg-type]


def is_terminal(state: int) -> bool:
    """Observed state past RUNNING: the task will never run again."""
    return state > RUNNING


def is_runnable(task: pb.Task) -> bool:
    """The task is wanted running (or about to be): its slot counts as alive."""
    return task.desired_state <= RUNNING
