"""The agent's secrets and configs: in memory only, as its managers sent them.

Values arrive in the assignment stream just before the first task that uses them and are
dropped when the dispatcher says no task of this node needs them (or when a complete set of
assignments replaces everything). They are never written to the task DB or any file of the
agent: the runtime puts a task's files on a tmpfs when it prepares the task's container. A task
sees only the files its own spec references (``files_for``), as Swarm's restricted getter does.

After a daemon restart the values are gone until the leader sends them again with the
complete set of assignments, which it does for every task that has not ended.
"""

from __future__ import annotations

import json
import logging

from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.runtime import SECRETS_DIR, RegistryAuth, RuntimeError_, TaskFile

log = logging.getLogger("shoal.agent")


class MissingFile(RuntimeError_):
    """A task references a secret or config this node was not given."""


class TaskFileStore:
    """Secret and config values by ID, held for the tasks of this node."""

    def __init__(self) -> None:
        self._secrets: dict[str, bytes] = {}
        self._configs: dict[str, bytes] = {}
        #: ``--with-registry-auth`` credentials by service ID (docker's AuthConfig JSON).
        self._registry_auths: dict[str, bytes] = {}
        #: Until the first complete set of assignments, a missing value may still come (a task
        #: re-adopted after a restart starts before the session): missing is then temporary.
        self.complete_seen = False

    def __len__(self) -> int:
        return len(self._secrets) + len(self._configs)

    def holds(self, object_id: str) -> bool:
        return object_id in self._secrets or object_id in self._configs

    def reset(self) -> None:
        """A complete set of assignments follows: forget everything first."""
        self._secrets.clear()
        self._configs.clear()
        self._registry_auths.clear()
        self.complete_seen = True

    def apply(self, change: rpb.AssignmentChange) -> bool:
        """Take a secret or config change; False when ``change`` is about a task."""
        remove = change.action == rpb.AssignmentChange.REMOVE
        if change.HasField("registry_auth"):
            if remove:
                self._registry_auths.pop(change.registry_auth.id, None)
            else:
                self._registry_auths[change.registry_auth.id] = bytes(change.registry_auth.spec.data)
            return True
        if change.HasField("secret"):
            table, obj_id, data = self._secrets, change.secret.id, change.secret.spec.data
        elif change.HasField("config"):
            table, obj_id, data = self._configs, change.config.id, change.config.spec.data
        else:
            return False
        if remove:
            if table.pop(obj_id, None) is not None:
                kind = "secret" if table is self._secrets else "config"
                log.info("forgot %s %s: no task of this node uses it", kind, obj_id)
        else:
            table[obj_id] = bytes(data)
        return True

    def registry_auth_for(self, task: pb.Task) -> RegistryAuth | None:
        """The credentials the manager sent for ``task``'s service, if any (a service made
        without ``--with-registry-auth`` has none: the runtime pulls as it would anyway)."""
        data = self._registry_auths.get(task.service_id)
        if data is None:
            return None
        try:
            fields = json.loads(data)
        except ValueError:
            log.warning(
                "registry credentials of service %s are not JSON: pulling without them", task.service_id
            )
            return None
        return RegistryAuth(
            username=str(fields.get("username", "")),
            password=str(fields.get("password", "")),
            server_address=str(fields.get("serveraddress", "")),
            identity_token=str(fields.get("identitytoken", "")),
        )

    def files_for(self, task: pb.Task) -> list[TaskFile]:
        """The files of ``task``'s own references; raises ``MissingFile`` (fatal for the task)
        if one was not delivered."""
        files: list[TaskFile] = []
        container = task.spec.container
        for secret_ref in container.secrets:
            value = self._secrets.get(secret_ref.secret_id)
            if value is None:
                raise MissingFile(
                    f"secret {secret_ref.secret_name or secret_ref.secret_id} was not delivered to this node "
                    "(the leader could not fetch it: see its log)",
                    temporary=not self.complete_seen,
                )
            files.append(_file(f"{SECRETS_DIR}/{secret_ref.file.name}", value, secret_ref.file, secret=True))
        for config_ref in container.configs:
            value = self._configs.get(config_ref.config_id)
            if value is None:
                raise MissingFile(
                    f"config {config_ref.config_name or config_ref.config_id} was not delivered to this node",
                    temporary=not self.complete_seen,
                )
            files.append(_file(config_ref.file.name, value, config_ref.file, secret=False))
        return files


def _file(target: str, data: bytes, file: pb.FileTarget, *, secret: bool) -> TaskFile:
    return TaskFile(target=target, data=data, uid=file.uid, gid=file.gid, mode=file.mode, secret=secret)
