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
from dataclasses import dataclass, field

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
        #: Services whose registry credentials the node holds, with the ID of the seal sent
        #: (``service update --with-registry-auth`` makes a new one: sent with the next task).
        self.registry_auths: dict[str, str] = {}

    def may_change(self, changed: Iterable[pb.Task]) -> bool:
        """Whether ``changes`` may have anything to say after these task changes: only when the
        node holds something or a changed task uses something (most services use nothing, and
        their assignment batches then cost nothing here)."""
        if self.secrets or self.configs or self.registry_auths:
            return True
        services = self.store.view.services
        return any(
            t.spec.container.secrets
            or t.spec.container.configs
            or _has_registry_auth(services.get(t.service_id))
            for t in changed
        )

    async def changes(self, tasks: Iterable[pb.Task]) -> Delivery:
        """What to send with the node's ``tasks`` (every task assigned to it): see ``Delivery``."""
        wanted_secrets: dict[str, list[pb.Task]] = {}
        wanted_configs: dict[str, list[pb.Task]] = {}
        wanted_auths: dict[str, list[pb.Task]] = {}
        view = self.store.view
        for task in tasks:
            if not needs_files(task):
                continue
            if _has_registry_auth(view.services.get(task.service_id)):
                wanted_auths.setdefault(task.service_id, []).append(task)
            for secret_ref in task.spec.container.secrets:
                wanted_secrets.setdefault(secret_ref.secret_id, []).append(task)
            for config_ref in task.spec.container.configs:
                wanted_configs.setdefault(config_ref.config_id, []).append(task)
        delivery = Delivery()
        await self._registry_auths(wanted_auths, delivery)
        for secret_id, users in wanted_secrets.items():
            if secret_id in self.secrets:
                continue
            secret = view.secrets.get(secret_id)
            try:
                if secret is None:
                    raise SecretFetchError(f"secret {_name_in(users[0], secret_id)} does not exist any more")
                value = await self.secret_value(secret, users[0])
            except SecretFetchError as exc:
                log.warning("secret %s not sent to node %s: %s", secret_id, users[0].node_id, exc)
                delivery.refuse(users, f"cannot get secret {_name_in(users[0], secret_id)}: {exc}")
                continue
            sent = pb.Secret(
                id=secret.id, spec=pb.SecretSpec(annotations=secret.spec.annotations, data=value)
            )
            delivery.before.append(rpb.AssignmentChange(action=UPDATE, secret=sent))
            self.secrets.add(secret_id)
        for config_id, users in wanted_configs.items():
            if config_id in self.configs:
                continue
            config = view.configs.get(config_id)
            if config is None:
                delivery.refuse(users, f"config {config_id} does not exist any more")
                continue
            delivery.before.append(rpb.AssignmentChange(action=UPDATE, config=config))
            self.configs.add(config_id)
        for secret_id in sorted(self.secrets - wanted_secrets.keys()):
            delivery.after.append(rpb.AssignmentChange(action=REMOVE, secret=pb.Secret(id=secret_id)))
            self.secrets.discard(secret_id)
        for config_id in sorted(self.configs - wanted_configs.keys()):
            delivery.after.append(rpb.AssignmentChange(action=REMOVE, config=pb.Config(id=config_id)))
            self.configs.discard(config_id)
        return delivery

    async def _registry_auths(self, wanted: dict[str, list[pb.Task]], delivery: Delivery) -> None:
        """The ``--with-registry-auth`` credentials of the services of ``wanted`` (by service ID,
        their tasks on this node) the node lacks, opened now; those no task needs are taken back."""
        services = self.store.view.services
        for service_id, users in wanted.items():
            service = services.get(service_id)
            if service is None:  # gone since ``changes`` looked (same loop turn: cannot happen)
                continue
            seal = service.registry_auth
            if self.registry_auths.get(service_id) == seal.id:
                continue
            try:
                value = await self.secret_value(seal, users[0])
            except SecretFetchError as exc:
                log.warning(
                    "registry credentials of %s not sent to node %s: %s", service_id, users[0].node_id, exc
                )
                delivery.refuse(users, f"cannot open the service's registry credentials: {exc}")
                continue
            sent = pb.Secret(id=service_id, spec=pb.SecretSpec(data=value))
            delivery.before.append(rpb.AssignmentChange(action=UPDATE, registry_auth=sent))
            self.registry_auths[service_id] = seal.id
        for service_id in sorted(self.registry_auths.keys() - wanted.keys()):
            delivery.after.append(rpb.AssignmentChange(action=REMOVE, registry_auth=pb.Secret(id=service_id)))
            del self.registry_auths[service_id]


def _has_registry_auth(service: pb.Service | None) -> bool:
    return service is not None and service.HasField("registry_auth")


@dataclass
class Delivery:
    """One batch's secrets and configs for a node.

    ``before`` goes ahead of the batch's task changes (a task never arrives before its
    files), ``after`` behind them (forgetting what no task needs). ``refused`` holds, by task
    ID, the error of the tasks not yet prepared whose files could not be had (the backend is
    down, the secret is gone): the dispatcher holds those tasks back and rejects them with it,
    so ``service ps`` names the cause.
    """

    before: list[rpb.AssignmentChange] = field(default_factory=list)
    after: list[rpb.AssignmentChange] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def refuse(self, users: list[pb.Task], error: str) -> None:
        for task in users:
            if task.status.state < states.READY:  # a prepared task already has its files
                self.refused.setdefault(task.id, error)


def _name_in(task: pb.Task, secret_id: str) -> str:
    """The secret's name as the task's spec references it (the ID if it does not)."""
    return next((r.secret_name for r in task.spec.container.secrets if r.secret_id == secret_id), secret_id)
