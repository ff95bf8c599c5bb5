"""``--with-registry-auth`` logic: the client reading docker's config, the control API sealing
and hiding the credentials, the leader sending them with a node's tasks only, the agent."""

from __future__ import annotations

import base64
import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from shoal import states
from shoal.agent.secrets import TaskFileStore
from shoal.cli.registry_auth import RegistryAuthError, credentials_for, registry_of
from shoal.manager import registryauth
from shoal.manager.controlapi import ControlAPI, ControlError
from shoal.manager.deliveries import Delivery, NodeDependencies
from shoal.manager.secrets import SecretsControl
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.runtime import RegistryAuth
from shoal.roles.secrets import SecretsProvider
from shoal.testing.objectstore import instant_store
from shoal_secrets_internal import InternalSecrets

PASSWORD = "hunter2-registry"
CREDENTIALS = {"username": "ann", "password": PASSWORD, "serveraddress": "reg.example:5000"}

# --------------------------------------------------------------------------- client side


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_registry_of_follows_dockers_rule() -> None:
    assert registry_of("busybox") == "docker.io"
    assert registry_of("library/busybox:1") == "docker.io"
    assert registry_of("index.docker.io/library/busybox") == "docker.io"
    assert registry_of("reg.example:5000/team/app:1") == "reg.example:5000"
    assert registry_of("localhost/app") == "localhost"


def test_credentials_come_from_docker_logins_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(
        tmp_path,
        monkeypatch,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _auth("hubuser", "hubpass")},
                "https://reg.example:5000": {"auth": _auth("ann", "pa:ss")},
                "tok.example": {"identitytoken": "tok-1"},
            }
        },
    )
    assert credentials_for("reg.example:5000/team/app:1") == {
        "username": "ann",
        "password": "pa:ss",
        "serveraddress": "reg.example:5000",
    }
    assert credentials_for("busybox")["username"] == "hubuser"
    assert credentials_for("tok.example/app") == {"serveraddress": "tok.example", "identitytoken": "tok-1"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "no credentials for reg.example:5000: "),
        ({"auths": {}}, "no credentials for reg.example:5000 in "),
        ({"auths": {}, "credsStore": "pass"}, "kept by the credential helper docker-credential-pass"),
        ({"credHelpers": {"reg.example:5000": "ecr"}}, "docker-credential-ecr, which shoal does not read"),
        ({"auths": {"reg.example:5000": {"auth": "!!"}}}, "is not base64 of user:password"),
        (
            {"auths": {"reg.example:5000": {"auth": _auth("no-colon", "")[:-4]}}},
            "is not base64 of user:password",
        ),
        ([1], "is not a JSON object"),
    ],
)
def test_missing_or_unreadable_credentials_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: Any, message: str
) -> None:
    if config is None:
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    else:
        _config(tmp_path, monkeypatch, config)
    with pytest.raises(RegistryAuthError) as raised:
        credentials_for("reg.example:5000/app")
    assert message in str(raised.value) and "\n" not in str(raised.value)


# --------------------------------------------------------------------------- control API


def _providers(name: str) -> SecretsProvider:
    return InternalSecrets()


async def _control() -> tuple[Any, SecretsControl, ControlAPI]:
    store = await instant_store()
    secrets = SecretsControl(store, _providers, lambda: "internal")
    control = ControlAPI(store, "n1")
    control.seal_registry_auth = partial(registryauth.seal, secrets)
    return store, secrets, control


async def test_credentials_are_kept_sealed_off_the_spec_and_shown_only_as_set() -> None:
    store, secrets, control = await _control()
    service_id = (
        await control.handlers()["service.create"](
            {"name": "web", "image": "reg.example:5000/app", "registry_auth": CREDENTIALS}
        )
    )["ID"]
    service = store.view.services.get(service_id)
    assert service is not None and service.HasField("registry_auth")
    assert PASSWORD.encode() not in service.SerializeToString()  # sealed, and not in the spec
    opened = await secrets.value_for(service.registry_auth, pb.Task(service_id=service_id))
    assert json.loads(opened) == CREDENTIALS
    shown = (await control.handlers()["service.inspect"]({"services": ["web"]}))[0]
    assert shown["WithRegistryAuth"] is True and "registry_auth" not in shown
    assert (
        "WithRegistryAuth"
        not in (await control.handlers()["service.inspect"]({"services": ["web"]}))[0]["spec"]
    )

    # An update without the flag keeps them (and changes no spec: no rolling update for them);
    # with it, a new seal replaces the old.
    first_seal = service.registry_auth.id
    await control.handlers()["service.update"]({"service": "web", "env_add": ["A=1"]})
    kept = store.view.services.get(service_id)
    assert kept is not None and kept.registry_auth.id == first_seal
    await control.handlers()["service.update"](
        {"service": "web", "registry_auth": {**CREDENTIALS, "password": "new"}}
    )
    replaced = store.view.services.get(service_id)
    assert replaced is not None and replaced.registry_auth.id != first_seal
    assert replaced.spec_version == kept.spec_version


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("user:pass", "registry_auth must be an object"),
        ({"username": "a", "password": "b", "email": "x"}, "unknown field 'email'"),
        ({"username": "a", "password": 3}, "every field must be a string"),
        ({"username": "a"}, "needs a username and password, or an identity token"),
        ({"identitytoken": "x" * 20000}, "larger than 16 KiB"),
    ],
)
async def test_bad_credentials_are_refused_in_one_line_with_nothing_stored(given: Any, message: str) -> None:
    store, _, control = await _control()
    with pytest.raises(ControlError) as raised:
        await control.handlers()["service.create"]({"name": "web", "image": "app", "registry_auth": given})
    assert message in raised.value.message
    assert list(store.view.services.all()) == []


# --------------------------------------------------------------------------- delivery


def _task(task_id: str, service_id: str, state: int = states.RUNNING) -> pb.Task:
    task = pb.Task(id=task_id, node_id="w1", service_id=service_id)
    task.status.state = state  # type: ignore[assignment]
    return task


async def test_a_node_gets_a_services_credentials_with_its_tasks_only_and_loses_them_after() -> None:
    store, secrets, control = await _control()
    private = (
        await control.handlers()["service.create"](
            {"name": "p", "image": "reg.example:5000/app", "registry_auth": CREDENTIALS}
        )
    )["ID"]
    public = (await control.handlers()["service.create"]({"name": "q", "image": "app"}))["ID"]
    deps = NodeDependencies(store, secrets.value_for)
    assert deps.may_change([_task("t0", public)]) is False  # services without credentials cost nothing
    assert deps.may_change([_task("t1", private)]) is True
    assert await deps.changes([_task("t0", public)]) == Delivery()
    sent = await deps.changes([_task("t0", public), _task("t1", private), _task("t2", private)])
    assert [(c.action, c.registry_auth.id) for c in sent.before] == [(rpb.AssignmentChange.UPDATE, private)]
    assert json.loads(sent.before[0].registry_auth.spec.data) == CREDENTIALS
    assert await deps.changes([_task("t1", private), _task("t2", private)]) == Delivery()  # once
    # New credentials go with the next task change; when no task needs them: REMOVE, no value.
    await control.handlers()["service.update"](
        {"service": "p", "registry_auth": {**CREDENTIALS, "password": "new"}}
    )
    sent = await deps.changes([_task("t1", private)])
    assert json.loads(sent.before[0].registry_auth.spec.data)["password"] == "new"
    sent = await deps.changes([_task("t1", private, states.FAILED)])
    assert [(c.action, c.registry_auth.id, c.registry_auth.spec.data) for c in sent.after] == [
        (rpb.AssignmentChange.REMOVE, private, b"")
    ]


def test_agent_keeps_credentials_in_memory_per_service_and_forgets_them() -> None:
    files = TaskFileStore()
    data = json.dumps(CREDENTIALS).encode()
    update = rpb.AssignmentChange(registry_auth=pb.Secret(id="svc", spec=pb.SecretSpec(data=data)))
    assert files.apply(update) is True
    assert files.registry_auth_for(_task("t", "svc")) == RegistryAuth("ann", PASSWORD, "reg.example:5000")
    assert files.registry_auth_for(_task("t", "other")) is None
    assert PASSWORD not in repr(files.registry_auth_for(_task("t", "svc")))
    remove = rpb.AssignmentChange(action=rpb.AssignmentChange.REMOVE, registry_auth=pb.Secret(id="svc"))
    assert files.apply(remove) is True and files.registry_auth_for(_task("t", "svc")) is None
    files.apply(update)
    files.reset()  # a complete set of assignments follows: everything is sent again
    assert files.registry_auth_for(_task("t", "svc")) is None
