"""Which secrets and configs one node holds: sent with the tasks that use them, taken back after.

Swarm's rule (§8): a worker receives a secret only as a dependency of a task assigned to it,
and the dispatcher tells it to forget the secret once no task of that node that has not ended
uses it. The leader fetches a secret's value through the secrets provider of its driver when
it first sends it to a node; the value travels in the assignment stream (mutual TLS) and is
never written by the dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from shoal import states
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.secrets import SecretFetchError
from shoal.store.memory import ObjectStore

log = logging.getLogger("shoal.dispatcher")

SecretValue = Callable[[pb.Secret, pb.Task], Awaitable[bytes]]

UPDATE = rpb.AssignmentChange.UPDATE
REMOVE = rpb.AssignmentChange.REMOVE


def needs_files(task: pb.Task) -> bool:
    """A task still needs its secrets and configs until it has ended (its container may yet
    be created: after an agent restart, or while it is being prepared)."""
    return task.status.state <= states.RUNNING


class NodeDependencies:
    """One assignment stream's record of the secrets and configs it gave its node."""

    def __init__(self, store: ObjectStore, secret_value: SecretValue) -> None:
        self.store = store
        self.secret_value = secret_value
        self.secrets: set[str] = set()
        self.configs: set[str] = set()

    def may_change(self, changed: Iterable[pb.Task]) -> bool:
        """Whether ``changes`` may have anything to say after these task changes: only when the
        node holds something or a changed task uses something (most services use nothing, and
        their assignment batches then cost nothing here)."""
        if self.secrets or self.configs:
            return True
        return any(t.spec.container.secrets or t.spec.container.configs for t in changed)

    async def changes(
        self, tasks: Iterable[pb.Task]
    ) -> tuple[list[rpb.AssignmentChange], list[rpb.AssignmentChange]]:
        """``(to send before the task changes, to send after them)`` for the node's ``tasks``
        (every task assigned to it): new dependencies first, so a task never arrives before
        its files; forgotten ones last."""
        wanted_secrets: dict[str, pb.Task] = {}
        wanted_configs: set[str] = set()
        for task in tasks:
            if not needs_files(task):
                continue
            for secret_ref in task.spec.container.secrets:
                wanted_secrets.setdefault(secret_ref.secret_id, task)
            wanted_configs.update(c.config_id for c in task.spec.container.configs)
        before: list[rpb.AssignmentChange] = []
        view = self.store.view
        for secret_id, task in wanted_secrets.items():
            if secret_id in self.secrets:
                continue
            secret = view.secrets.get(secret_id)
            if secret is None:
                continue  # removed meanwhile: the agent reports the task's file as missing
            try:
                value = await self.secret_value(secret, task)
            except SecretFetchError as exc:
                log.warning("secret %s not sent to node %s: %s", secret_id, task.node_id, exc)
                continue
            sent = pb.Secret(
                id=secret.id, spec=pb.SecretSpec(annotations=secret.spec.annotations, data=value)
            )
            before.append(rpb.AssignmentChange(action=UPDATE, secret=sent))
            self.secrets.add(secret_id)
        for config_id in wanted_configs - self.configs:
            config = view.configs.get(config_id)
            if config is None:
                continue
            before.append(rpb.AssignmentChange(action=UPDATE, config=config))
            self.configs.add(config_id)
        after: list[rpb.AssignmentChange] = []
        for secret_id in sorted(self.secrets - wanted_secrets.keys()):
            after.append(rpb.AssignmentChange(action=REMOVE, secret=pb.Secret(id=secret_id)))
            self.secrets.discard(secret_id)
        for config_id in sorted(self.configs - wanted_configs):
            after.append(rpb.AssignmentChange(action=REMOVE, config=pb.Config(id=config_id)))
            self.configs.discard(config_id)
        return before, after
