"""Secrets and configs logic, in process: the control API, references, deliveries, the agent's
memory. The real thing (daemons, engines, tmpfs) is tests/test_secrets.py."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from shoal import rpc, states
from shoal.agent.secrets import MissingFile, TaskFileStore
from shoal.manager.controlapi import ControlAPI, ControlError, redacted_cluster
from shoal.manager.deliveries import Delivery, NodeDependencies
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.secrets import SecretsControl
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.runtime import RuntimeError_, TaskFile
from shoal.roles.secrets import SecretsProvider
from shoal.roles.transport import PeerIdentity
from shoal.runtimekit import taskfiles
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store
from shoal_secrets_internal import InternalSecrets


def _providers(name: str) -> SecretsProvider:
    if name != "internal":
        raise ValueError(f'no secrets plugin "{name}"')
    return InternalSecrets()


async def _apis() -> tuple[ObjectStore, SecretsControl, ControlAPI]:
    store = await instant_store()
    return store, SecretsControl(store, _providers, lambda: "internal"), ControlAPI(store, "n1")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


VALUE = b"correct horse battery staple"


async def _created(secrets: SecretsControl, name: str = "db", value: bytes = VALUE) -> str:
    return str((await secrets.handlers()["secret.create"]({"name": name, "data": _b64(value)}))["ID"])


# --------------------------------------------------------------------------- control API


async def test_a_secret_is_stored_sealed_and_never_shown() -> None:
    store, secrets, _ = await _apis()
    secret_id = await _created(secrets)
    stored = store.view.secrets.get(secret_id)
    assert stored is not None and VALUE not in stored.SerializeToString()
    cluster = store.view.cluster()
    assert cluster is not None and len(cluster.secrets_material["internal"]) == 32
    assert "secrets_material" not in str(redacted_cluster(cluster))
    shown = str(await secrets.handlers()["secret.inspect"]({"secrets": ["db"]})) + str(
        await secrets.handlers()["secret.ls"]({})
    )
    assert VALUE.decode() not in shown and "'data'" not in shown
    assert (await secrets.handlers()["secret.ls"]({}))[0]["Driver"] == "internal"
    # the leader opens it for a task
    task = pb.Task(id="t1", node_id="w1")
    assert await secrets.value_for(stored, task) == VALUE


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"name": "db", "data": _b64(b"x" * 500 * 1024)}, "too large: 512000 bytes, the limit is 500 KiB"),
        ({"name": "db", "data": ""}, "must not be empty"),
        ({"name": "db", "data": "%%%"}, "must be base64"),
        ({"name": "-db", "data": _b64(b"x")}, 'invalid secret name "-db"'),
        ({"name": "d" * 65, "data": _b64(b"x")}, "at most 64 characters"),
        (
            {"name": "db", "data": _b64(b"x"), "driver": "vault"},
            'invalid --driver vault: no secrets plugin "vault"',
        ),
        ({"name": "db", "data": _b64(b"x"), "labels": ["=v"]}, 'invalid --label "=v"'),
    ],
)
async def test_bad_secret_create_is_one_line_and_stores_nothing(params: dict[str, Any], message: str) -> None:
    store, secrets, _ = await _apis()
    with pytest.raises(ControlError) as caught:
        await secrets.handlers()["secret.create"](params)
    assert message in caught.value.message and "\n" not in caught.value.message
    assert list(store.view.secrets.all()) == []


async def test_names_are_unique_and_values_immutable() -> None:
    _, secrets, _ = await _apis()
    await _created(secrets)
    with pytest.raises(ControlError, match="secret db already exists"):
        await _created(secrets, value=b"other")


async def test_config_data_may_be_inspected_and_is_limited() -> None:
    _, secrets, _ = await _apis()
    await secrets.handlers()["config.create"]({"name": "app", "data": _b64(b"port=80")})
    (shown,) = await secrets.handlers()["config.inspect"]({"configs": ["app"]})
    assert base64.b64decode(shown["spec"]["data"]) == b"port=80"
    with pytest.raises(ControlError, match="1000 KiB"):
        await secrets.handlers()["config.create"]({"name": "big", "data": _b64(b"x" * 1000 * 1024)})


async def test_service_references_resolve_and_block_removal() -> None:
    store, secrets, control = await _apis()
    secret_id = await _created(secrets)
    await secrets.handlers()["config.create"]({"name": "app", "data": _b64(b"c")})
    created = await control.handlers()["service.create"](
        {
            "name": "web",
            "image": "busybox",
            "secrets": ["db", "source=db,target=db2,uid=1,gid=2,mode=0400"],
            "configs": ["app"],
        }
    )
    service = store.view.services.get(created["ID"])
    assert service is not None
    refs = service.spec.task.container.secrets
    assert [(r.secret_id, r.secret_name, r.file.name, r.file.mode) for r in refs] == [
        (secret_id, "db", "db", 0o444),
        (secret_id, "db", "db2", 0o400),
    ]
    assert (refs[1].file.uid, refs[1].file.gid) == (1, 2)
    assert [c.file.name for c in service.spec.task.container.configs] == ["/app"]
    with pytest.raises(ControlError, match="secret 'db' is in use by the following service: web"):
        await secrets.handlers()["secret.rm"]({"secrets": ["db"]})
    with pytest.raises(ControlError, match="config 'app' is in use"):
        await secrets.handlers()["config.rm"]({"configs": ["app"]})
    # --secret-rm / --secret-add is a spec change (a rolling update)
    version = service.spec_version
    await control.handlers()["service.update"]({"service": "web", "secret_rm": ["db"], "config_rm": ["app"]})
    updated = store.view.services.get(created["ID"])
    assert updated is not None and updated.spec_version == version + 1
    assert list(updated.spec.task.container.secrets) == []
    await _created(secrets, "other")
    assert await secrets.handlers()["secret.rm"]({"secrets": ["db", "other"]}) == ["db", "other"]


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("nope", "secret not found: nope"),
        ("source=db,target=a/b", "target must be a file name"),
        ("source=db,mode=0999", "mode must be an octal mode"),
        ("source=db,uid=-1", "uid must be a number"),
        ("source=db,color=red", "use NAME or source=NAME"),
        ("target=x", "source (the secret name) is required"),
    ],
)
async def test_bad_secret_reference_is_refused_and_nothing_created(secret: str, message: str) -> None:
    store, secrets, control = await _apis()
    await _created(secrets)
    with pytest.raises(ControlError) as caught:
        await control.handlers()["service.create"]({"name": "web", "image": "busybox", "secrets": [secret]})
    assert message in caught.value.message
    assert list(store.view.services.all()) == []


async def test_two_references_with_one_target_are_refused() -> None:
    _, secrets, control = await _apis()
    await _created(secrets)
    await _created(secrets, "other")
    with pytest.raises(ControlError, match="two references use the target db"):
        await control.handlers()["service.create"](
            {"name": "web", "image": "busybox", "secrets": ["db", "source=other,target=db"]}
        )


# --------------------------------------------------------------------------- deliveries


def _task(task_id: str, secret_ids: list[str], state: int = states.RUNNING) -> pb.Task:
    task = pb.Task(id=task_id, node_id="w1")
    task.status.state = state  # type: ignore[assignment]
    for secret_id in secret_ids:
        task.spec.container.secrets.add(secret_id=secret_id, secret_name=secret_id)
    return task


async def test_a_node_gets_a_secret_once_with_its_first_task_and_loses_it_after_the_last() -> None:
    store, secrets, _ = await _apis()
    first = await _created(secrets, "a")
    second = await _created(secrets, "b", b"other value")
    opened: list[tuple[str, str]] = []

    async def value(secret: pb.Secret, task: pb.Task) -> bytes:
        opened.append((secret.id, task.id))
        return await secrets.value_for(secret, task)

    deps = NodeDependencies(store, value)
    assert deps.may_change([_task("t0", [])]) is False  # services without secrets cost nothing
    sent = await deps.changes([_task("t1", [first]), _task("t2", [first])])
    assert [(c.action, c.secret.id, c.secret.spec.data) for c in sent.before] == [
        (rpb.AssignmentChange.UPDATE, first, VALUE)
    ]
    assert sent.after == [] and sent.refused == {} and opened == [(first, "t1")]
    # unchanged: nothing is sent again
    assert await deps.changes([_task("t1", [first]), _task("t2", [first])]) == Delivery()
    # t1 ends, t2 still runs: kept; a task needing b arrives: b is sent
    sent = await deps.changes(
        [_task("t1", [first], states.FAILED), _task("t2", [first]), _task("t3", [second])]
    )
    assert [c.secret.id for c in sent.before] == [second] and sent.after == []
    # no task of the node needs a any more: REMOVE, carrying no value
    sent = await deps.changes([_task("t3", [second])])
    assert sent.before == []
    assert [(c.action, c.secret.id, c.secret.spec.data) for c in sent.after] == [
        (rpb.AssignmentChange.REMOVE, first, b"")
    ]


async def _tamper(store: ObjectStore, secret_id: str) -> None:
    def tamper(tx: Tx) -> None:
        secret = copy(tx.get("secret", secret_id))
        secret.spec.data = secret.spec.data[:-1] + bytes([secret.spec.data[-1] ^ 1])
        tx.update(secret)

    await store.update(tamper)


async def test_tasks_whose_secret_cannot_be_had_are_refused_with_the_backends_words() -> None:
    store, secrets, _ = await _apis()
    secret_id = await _created(secrets)
    await _tamper(store, secret_id)
    deps = NodeDependencies(store, secrets.value_for)
    sent = await deps.changes([_task("new", [secret_id], states.ASSIGNED), _task("running", [secret_id])])
    assert sent.before == [] and list(sent.refused) == ["new"]  # a running task has its files
    assert sent.refused["new"].startswith(f"cannot get secret {secret_id}: internal secrets backend:")
    gone = await deps.changes([_task("t9", ["nope"], states.ASSIGNED)])
    assert gone.refused == {"t9": "cannot get secret nope: secret nope does not exist any more"}


async def test_the_dispatcher_holds_back_and_rejects_a_task_whose_secret_cannot_be_had() -> None:
    store, secrets, _ = await _apis()
    good = await _created(secrets, "good")
    bad = await _created(secrets, "bad", b"other")
    await _tamper(store, bad)

    def seed(tx: Tx) -> None:
        tx.create(pb.Node(id="w1", role=pb.NodeSpec.WORKER))
        for task_id, secret_id, name in (("t-good", good, "good"), ("t-bad", bad, "bad")):
            task = _task(task_id, [secret_id], states.ASSIGNED)
            task.spec.container.secrets[0].secret_name = name
            task.desired_state = states.RUNNING  # type: ignore[assignment]
            tx.create(task)

    await store.update(seed)
    dispatcher = Dispatcher(store, "c1", lambda: ["10.0.0.1:2377"], secret_value=secrets.value_for)
    dispatcher.start()
    peer = PeerIdentity(node_id="w1", role=rpc.WORKER_OU, cluster_id="c1")
    session = dispatcher.session(rpb.SessionRequest().SerializeToString(), peer).__aiter__()
    first = rpb.SessionMessage.FromString(await asyncio.wait_for(session.__anext__(), 5))
    stream = dispatcher.assignments(
        rpb.AssignmentsRequest(session_id=first.session_id).SerializeToString(), peer
    ).__aiter__()
    try:
        complete = rpb.AssignmentsMessage.FromString(await asyncio.wait_for(stream.__anext__(), 5))
        assert [(c.secret.id, c.task.id) for c in complete.changes] == [(good, ""), ("", "t-good")]

        async def rejected() -> pb.Task:
            while True:
                task = store.view.tasks.get("t-bad")
                if task is not None and task.status.state == states.REJECTED:
                    return task
                await asyncio.sleep(0.01)

        task = await asyncio.wait_for(rejected(), 5)
        assert task.status.err.startswith("cannot get secret bad: internal secrets backend: secret bad:")
        # the rejected task then goes out as such (the agent records it, runs nothing)
        later = rpb.AssignmentsMessage.FromString(await asyncio.wait_for(stream.__anext__(), 5))
        assert [(c.task.id, c.task.status.state) for c in later.changes] == [("t-bad", states.REJECTED)]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await session.aclose()  # type: ignore[attr-defined]
        await dispatcher.stop()


# --------------------------------------------------------------------------- the agent's memory


def test_agent_store_serves_a_task_only_its_own_files_and_forgets() -> None:
    files = TaskFileStore()
    files.reset()  # a complete set of assignments arrived
    change = rpb.AssignmentChange(action=rpb.AssignmentChange.UPDATE)
    change.secret.id = "s1"
    change.secret.spec.data = b"v1"
    assert files.apply(change)
    assert not files.apply(rpb.AssignmentChange(task=pb.Task(id="t1")))
    task = _task("t1", ["s1"])
    task.spec.container.secrets[0].file.name = "db"
    task.spec.container.secrets[0].file.mode = 0o400
    (file,) = files.files_for(task)
    assert (file.target, file.data, file.mode, file.secret) == ("/run/secrets/db", b"v1", 0o400, True)
    assert files.files_for(_task("t2", [])) == []
    files.apply(rpb.AssignmentChange(action=rpb.AssignmentChange.REMOVE, secret=pb.Secret(id="s1")))
    assert len(files) == 0
    with pytest.raises(MissingFile) as caught:
        files.files_for(task)
    assert not caught.value.temporary  # fatal once the complete set was seen


def test_a_missing_file_before_the_first_complete_set_is_temporary() -> None:
    with pytest.raises(MissingFile) as caught:
        TaskFileStore().files_for(_task("t1", ["s1"]))
    assert caught.value.temporary


WEIRD: list[Any] = [
    None,
    "",
    5,
    -1,
    1.5,
    True,
    [],
    [1],
    ["x"],
    {},
    {"a": 1},
    "x" * 10,
    "%%",
    "source=db,mode=x",
]
KEYS = "name data labels driver secrets configs secret_add secret_rm config_add config_rm".split()


async def test_any_json_value_in_any_secret_parameter_is_refused_cleanly_or_accepted() -> None:
    """A scripted caller can send any JSON: one-line refusals, never an internal error."""
    store, secrets, control = await _apis()
    await _created(secrets)
    await control.handlers()["service.create"]({"name": "keep", "image": "a:1"})
    handlers = {
        **secrets.handlers(),
        "service.create": control.handlers()["service.create"],
        "service.update": control.handlers()["service.update"],
    }
    crashes = []
    for method, handler in handlers.items():
        for key in KEYS:
            for value in WEIRD:
                params: dict[str, Any] = {
                    "name": "other",
                    "data": _b64(b"v"),
                    "image": "a:1",
                    "service": "keep",
                }
                params.update(secrets=["db"], configs=[], services=["keep"])
                params[key] = value
                try:
                    await handler(params)
                except ControlError as exc:
                    if "\n" in exc.message:
                        crashes.append(f"{method} {key}={value!r}: two lines: {exc.message!r}")
                except Exception as exc:  # what the test looks for
                    crashes.append(f"{method} {key}={value!r}: {type(exc).__name__}: {exc}")
                for name in ("other",):
                    for kind in ("secret", "config"):
                        table = store.view.secrets if kind == "secret" else store.view.configs
                        if any(o.spec.annotations.name == name for o in table.all()):
                            await secrets.handlers()[f"{kind}.rm"]({f"{kind}s": [name]})
                if store.view.service_by_name("other") is not None:
                    await control.handlers()["service.rm"]({"services": ["other"]})
    assert crashes == []


# --------------------------------------------------------------------------- the runtime's tmpfs


def test_task_files_check_refuses_targets_in_one_line() -> None:
    for files, message in (
        ([TaskFile("/run/secrets/a/b", b"x")], "is not a file directly under /run/secrets"),
        ([TaskFile("/etc/x", b"x")], "is not a file directly under /run/secrets"),
        ([TaskFile("relative", b"x", secret=False)], "is not an absolute file path"),
        ([TaskFile("/run/secrets/a", b"x"), TaskFile("/run/secrets/a", b"y")], "two secrets or configs"),
    ):
        with pytest.raises(RuntimeError_, match=message):
            taskfiles.check(files)


def test_task_files_live_on_a_private_read_only_tmpfs_until_released(tmp_path: Path) -> None:
    base = tmp_path / "task-files"
    files = [
        TaskFile("/run/secrets/db", b"v", uid=7, gid=8, mode=0o400),
        TaskFile("/etc/app", b"c", secret=False),
    ]
    binds = taskfiles.materialise(base, "t1", files)
    try:
        root = base / "t1"
        assert [(b.source, b.target) for b in binds] == [
            (str(root / "secrets"), "/run/secrets"),
            (str(root / "configs" / "0"), "/etc/app"),
        ]
        assert stat.S_IMODE(base.stat().st_mode) == 0o700
        db = (root / "secrets" / "db").stat()
        assert (stat.S_IMODE(db.st_mode), db.st_uid, db.st_gid) == (0o400, 7, 8)
        assert os.statvfs(root).f_flag & os.ST_RDONLY
        assert root.stat().st_dev != base.stat().st_dev  # its own filesystem: a tmpfs
        assert taskfiles.materialise(base, "t1", files) == binds  # a repeated prepare reuses it
    finally:
        taskfiles.release(base, "t1")
    assert not (base / "t1").exists()
    taskfiles.release(base, "t1")  # already gone: fine


def test_a_hundred_small_secrets_fit_their_tmpfs(tmp_path: Path) -> None:
    # A tmpfs gives each file whole pages: sized by bytes alone, 100 secrets did not fit.
    files = [TaskFile(f"/run/secrets/s{i}", b"x" * 64) for i in range(100)]
    try:
        taskfiles.materialise(tmp_path, "t1", files)
        assert len(list((tmp_path / "t1" / "secrets").iterdir())) == 100
    finally:
        taskfiles.release(tmp_path, "t1")
