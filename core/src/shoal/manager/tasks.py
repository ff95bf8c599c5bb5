"""Making tasks: what every task of a service starts as, and when a node can keep its tasks."""

from __future__ import annotations

import time

from shoal import defaults, states
from shoal.ids import new_id
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ReadView, Tx, copy

#: How long a replacement waits for the task it replaces to stop before it starts anyway (the
#: restart supervisor's and the rolling update's alike): a node that is up but never reports.
OLD_TASK_TIMEOUT = 60.0


def restart_policy(task: pb.Task) -> pb.RestartPolicy:
    """The task's restart policy with Swarm's defaults filled in (condition any, delay 5s)."""
    if task.spec.HasField("restart"):
        return task.spec.restart
    return defaults.restart_policy()


def task_template(service: pb.Service, desired: int = states.RUNNING) -> pb.Task:
    """What every new task of ``service`` has in common (all but its ID, slot, name and time).

    Making many tasks of one service from a template is one C copy each: building each from
    the service's fields (its task spec, annotations and endpoint copied one by one) cost
    three times as much, and 100,000 replicas are 100,000 of them on the leader."""
    task = pb.Task(
        spec=service.spec.task,
        spec_version=service.spec_version,
        service_id=service.id,
        service_annotations=service.spec.annotations,
        desired_state=desired,  # type: ignore[arg-type]
        endpoint=service.spec.endpoint,
    )
    task.status.state = states.NEW
    task.status.message = "created"
    return task


def new_task(
    service: pb.Service, slot: int, desired: int = states.RUNNING, template: pb.Task | None = None
) -> pb.Task:
    """A fresh task for ``slot`` of ``service`` (state NEW; the scheduler takes it from here).

    ``template``: ``task_template(service, desired)``, made once for many tasks."""
    task = pb.Task()
    task.CopyFrom(template if template is not None else task_template(service, desired))
    task.id = new_id()
    task.slot = slot
    task.annotations.name = f"{service.spec.annotations.name}.{slot}"
    task.status.timestamp = time.time()
    return task


def node_unavailable(node: pb.Node | None) -> bool:
    """Tasks on this node must be replaced elsewhere: it is gone, down, or drained."""
    return (
        node is None or node.status.state == pb.NodeStatus.DOWN or node.spec.availability == pb.NodeSpec.DRAIN
    )


def start_now(tx: Tx, task_id: str) -> bool:
    """Promote a task waiting at desired READY to RUNNING (SwarmKit's ``StartNow``); False when
    it no longer waits (gone, started already, or shut down meanwhile)."""
    task = tx.task(task_id)
    if task is None or task.desired_state != states.READY:
        return False
    task = copy(task)
    task.desired_state = states.RUNNING
    tx.update(task)
    return True


def old_task_gone(view: ReadView, task_id: str) -> bool:
    """Whether the task a replacement waits for holds no container that could still run: it
    is gone or ended, was never handed to a node (below ASSIGNED, or no node), or its node is
    gone or down. The one rule of the restart supervisor and the rolling update (each had
    its own: a pre-assigned global task not yet ASSIGNED was waited for by one and not by
    the other)."""
    task = view.tasks.get(task_id)
    if task is None or states.is_terminal(task.status.state):
        return True
    if task.status.state < states.ASSIGNED or not task.node_id:
        return True
    node = view.nodes.get(task.node_id)
    return node is None or node.status.state == pb.NodeStatus.DOWN
