"""The control API's ``secret.*`` and ``config.*`` methods, and the leader's way to a value.

Secrets: the value goes to the secrets provider of the secret's driver (the cluster's secrets
plugin unless ``--driver`` names another), which returns the at-rest form the store keeps;
the API never returns a value. Configs are not sensitive: stored as given, shown by inspect.
Both are immutable (Swarm allows only label changes; shoal has none yet), limited in size,
and cannot be removed while a service uses them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from shoal.ids import new_id
from shoal.manager import methods
from shoal.manager import requests as rq
from shoal.manager.controlapi import ControlError, refs, to_dict
from shoal.manager.methods import Handler
from shoal.manager.secretrefs import check_name, find, services_using
from shoal.proto import objects_pb2 as pb
from shoal.roles.secrets import SecretFetchError, SecretsProvider, SecretUse
from shoal.roles.transport import StatusCode
from shoal.specs import SpecError
from shoal.store.memory import ObjectStore, Tx, copy

#: Swarm's limits (``MaxSecretSize``, ``MaxConfigSize``): a value is under these.
MAX_SECRET_BYTES = 500 * 1024
MAX_CONFIG_BYTES = 1000 * 1024

SecretsFactory = Callable[[str], SecretsProvider]


def _data(params: dict[str, Any], what: str, limit: int) -> bytes:
    raw = params.get("data")
    if not isinstance(raw, str):
        raise ControlError(StatusCode.INVALID_ARGUMENT, f'{what} data is required (base64 in "data")')
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ControlError(StatusCode.INVALID_ARGUMENT, f"{what} data must be base64") from None
    if not data:
        raise ControlError(StatusCode.INVALID_ARGUMENT, f"{what} data must not be empty")
    if len(data) >= limit:
        raise ControlError(
            StatusCode.INVALID_ARGUMENT,
            f"{what} data is too large: {len(data)} bytes, the limit is {limit // 1024} KiB",
        )
    return data


def _labels(params: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for text in refs(params, "labels", "--label", required=False):
        key, _, value = text.partition("=")
        if not key:
            raise ControlError(StatusCode.INVALID_ARGUMENT, f'invalid --label "{text}": use KEY=VALUE or KEY')
        labels[key] = value
    return labels


def _name(params: dict[str, Any], what: str) -> str:
    try:
        return check_name(params.get("name"), what)
    except SpecError as exc:
        raise ControlError(StatusCode.INVALID_ARGUMENT, str(exc)) from None


class SecretsControl:
    """Handlers for secrets and configs; ``value_for`` serves the dispatcher on the leader."""

    def __init__(
        self, store: ObjectStore, providers: SecretsFactory, default_driver: Callable[[], str]
    ) -> None:
        self.store = store
        #: Builds the provider of a driver name (a secrets plugin), once per name.
        self._factory = providers
        self._providers: dict[str, SecretsProvider] = {}
        #: The cluster's secrets plugin (what ``--driver`` defaults to).
        self.default_driver = default_driver

    def handlers(self) -> dict[str, Handler]:
        """Its registered methods (``methods.py``), parsed and bound."""
        return methods.bind({methods.Owner.SECRETS: self})

    def provider(self, driver: str) -> SecretsProvider:
        driver = driver or self.default_driver()
        if driver not in self._providers:
            self._providers[driver] = self._factory(driver)
        return self._providers[driver]

    async def material(self, driver: str) -> bytes:
        """The driver's cluster material, made and committed the first time it is needed."""
        cluster = self.store.view.cluster()
        if cluster is not None and driver in cluster.secrets_material:
            return cluster.secrets_material[driver]
        fresh = await self.provider(driver).new_material()

        def keep(tx: Tx) -> None:
            current = tx.cluster()
            if current is None:
                raise ControlError(StatusCode.FAILED_PRECONDITION, "the swarm has no cluster object yet")
            if driver not in current.secrets_material:  # another create may have won the race
                current = copy(current)
                current.secrets_material[driver] = fresh
                tx.update(current)

        await self.store.update(keep)
        cluster = self.store.view.cluster()
        assert cluster is not None
        return cluster.secrets_material[driver]

    # ------------------------------------------------------------------ secrets

    async def secret_create(self, request: rq.Options) -> Any:
        params = request.options
        name = _name(params, "secret")
        labels = _labels(params)
        driver = params.get("driver") or ""
        if not isinstance(driver, str):
            raise ControlError(StatusCode.INVALID_ARGUMENT, "invalid --driver: give a plugin name")
        driver = driver or self.default_driver()
        try:
            provider = self.provider(driver)
        except Exception as exc:  # a PluginError: one line naming the plugin
            raise ControlError(StatusCode.INVALID_ARGUMENT, f"invalid --driver {driver}: {exc}") from None
        value = _data(params, "secret", MAX_SECRET_BYTES) if provider.takes_value else b""
        if _by_name(self.store.view.secrets.all(), name) is not None:
            raise ControlError(StatusCode.ALREADY_EXISTS, f"secret {name} already exists")
        secret = pb.Secret(id=new_id())
        material = await self.material(driver)
        try:
            stored = await provider.store(material, secret.id, name, value)
        except SecretFetchError as exc:
            raise ControlError(StatusCode.UNAVAILABLE, str(exc)) from None
        secret.spec.CopyFrom(
            pb.SecretSpec(annotations=pb.Annotations(name=name, labels=labels), data=stored, driver=driver)
        )

        def create(tx: Tx) -> None:
            if _by_name(tx.view.secrets.all(), name) is not None:
                raise ControlError(StatusCode.ALREADY_EXISTS, f"secret {name} already exists")
            tx.create(secret)

        await self.store.update(create)
        return {"ID": secret.id}

    def _find_secret(self, ref: str) -> pb.Secret:
        return self._find(self.store.view.secrets.all(), ref, "secret")  # type: ignore[return-value]

    @staticmethod
    def _find(objects: Any, ref: str, what: str) -> pb.Secret | pb.Config:
        if not ref:
            raise ControlError(StatusCode.INVALID_ARGUMENT, f'a {what} ID or name is required, not ""')
        try:
            found = find(objects, ref, what)
        except SpecError as exc:
            raise ControlError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        if found is None:
            raise ControlError(StatusCode.NOT_FOUND, f"{what} {ref} not found")
        return found

    async def secret_ls(self, request: rq.NoParams) -> Any:
        secrets = sorted(self.store.view.secrets.all(), key=lambda s: s.spec.annotations.name)
        return [_row(s, s.spec.driver or self.default_driver()) for s in secrets]

    async def secret_inspect(self, request: rq.SecretRefs) -> Any:
        return [redacted_secret(self._find_secret(ref)) for ref in request.refs]

    async def secret_rm(self, request: rq.SecretRefs) -> Any:
        return await self._remove(request.refs, "secret")

    async def _remove(self, names: list[str], kind: str) -> Any:
        objects = list(self.store.view.secrets.all() if kind == "secret" else self.store.view.configs.all())
        found = [self._find(objects, ref, kind) for ref in names]
        for obj in found:
            users = services_using(self.store.view, kind, obj.id)
            if users:
                raise ControlError(
                    StatusCode.FAILED_PRECONDITION,
                    f"{kind} '{obj.spec.annotations.name}' is in use by the following service"
                    f"{'s' if len(users) > 1 else ''}: {', '.join(users)}",
                )

        def remove(tx: Tx) -> None:
            for obj in found:
                users = services_using(tx.view, kind, obj.id)
                if users:
                    raise ControlError(
                        StatusCode.FAILED_PRECONDITION,
                        f"{kind} '{obj.spec.annotations.name}' is in use by the following service: "
                        + ", ".join(users),
                    )
                tx.delete(kind, obj.id)

        await self.store.update(remove)
        return [obj.spec.annotations.name for obj in found]

    # ------------------------------------------------------------------ configs

    async def config_create(self, request: rq.Options) -> Any:
        params = request.options
        name = _name(params, "config")
        labels = _labels(params)
        data = _data(params, "config", MAX_CONFIG_BYTES)
        config = pb.Config(
            id=new_id(), spec=pb.ConfigSpec(annotations=pb.Annotations(name=name, labels=labels), data=data)
        )

        def create(tx: Tx) -> None:
            if _by_name(tx.view.configs.all(), name) is not None:
                raise ControlError(StatusCode.ALREADY_EXISTS, f"config {name} already exists")
            tx.create(config)

        await self.store.update(create)
        return {"ID": config.id}

    async def config_ls(self, request: rq.NoParams) -> Any:
        configs = sorted(self.store.view.configs.all(), key=lambda c: c.spec.annotations.name)
        return [_row(c, "") for c in configs]

    async def config_inspect(self, request: rq.ConfigRefs) -> Any:
        return [to_dict(self._find(self.store.view.configs.all(), ref, "config")) for ref in request.refs]

    async def config_rm(self, request: rq.ConfigRefs) -> Any:
        return await self._remove(request.refs, "config")

    # ------------------------------------------------------------------ delivery (leader)

    async def value_for(self, secret: pb.Secret, task: pb.Task) -> bytes:
        """The value of ``secret`` for ``task``'s assignment (raises ``SecretFetchError``)."""
        cluster = self.store.view.cluster()
        driver = secret.spec.driver or self.default_driver()
        material = cluster.secrets_material.get(driver, b"") if cluster is not None else b""
        use = SecretUse(
            secret_id=secret.id,
            secret_name=secret.spec.annotations.name,
            labels=dict(secret.spec.annotations.labels),
            service_id=task.service_id,
            service_name=task.service_annotations.name,
            task_id=task.id,
            node_id=task.node_id,
        )
        try:
            provider = self.provider(driver)
        except Exception as exc:
            raise SecretFetchError(f"secrets driver {driver}: {exc}") from None
        return await provider.fetch(material, secret.spec.data, use)


def _by_name(objects: Any, name: str) -> Any:
    return next((o for o in objects if o.spec.annotations.name == name), None)


def _row(obj: pb.Secret | pb.Config, driver: str) -> dict[str, Any]:
    return {
        "ID": obj.id,
        "Name": obj.spec.annotations.name,
        "Driver": driver,
        "CreatedAt": obj.meta.created_at,
        "UpdatedAt": obj.meta.updated_at,
        "Labels": dict(obj.spec.annotations.labels),
    }


def redacted_secret(secret: pb.Secret) -> dict[str, Any]:
    """A secret as the API shows it: never its value or at-rest form."""
    clean = copy(secret)
    clean.spec.ClearField("data")
    return to_dict(clean)
