"""``task.inspect``: one or more tasks as stored, for ``shoal inspect --type task``.

Docker inspects a task by ID, unique ID prefix or its ``SERVICE.SLOT.ID`` name (as
``service ps --no-trunc`` shows it); so does this. The task carries nothing secret (a secret's
value and registry credentials are never part of a task), so it is returned whole.
"""

from __future__ import annotations

from shoal.manager.controlapi import ControlError
from shoal.proto import objects_pb2 as pb
from shoal.roles.transport import StatusCode
from shoal.store.memory import ObjectStore


def find_task(store: ObjectStore, ref: str) -> pb.Task:
    """A task by ID, unique ID prefix, or ``NAME.SLOT.ID`` / ``NAME.NODEID.ID`` name."""
    if not ref:
        raise ControlError(StatusCode.INVALID_ARGUMENT, 'a task ID is required, not ""')
    tasks = store.view.tasks
    wanted = ref.rsplit(".", 1)[-1]  # the ID at the end of a task name
    task = tasks.get(wanted)
    if task is not None:
        return task
    matches = [t for t in tasks.all() if t.id.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ControlError(StatusCode.INVALID_ARGUMENT, f"task {ref} is ambiguous ({len(matches)} matches)")
    raise ControlError(StatusCode.NOT_FOUND, f"no such task: {ref}")
