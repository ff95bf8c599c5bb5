"""``shoal stack deploy``'s logic without a cluster: Compose files read, substituted, merged and
checked, mapped to ``service create``'s options with docker's names and labels, and the
managers' ``replace`` update that leaves an unchanged service alone (issue 17 item 13)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from shoal import defaults
from shoal.cli.stack_cmd import build_plan
from shoal.manager.controlapi import ControlAPI
from shoal.proto import objects_pb2 as pb
from shoal.stack.compose import ComposeError
from shoal.stack.convert import StackPlan
from shoal.stack.interpolate import InterpolationError, substitute
from shoal.store.memory import ObjectStore
from shoal.testing.objectstore import InstantLog

FULL = """
version: "3.8"
services:
  web:
    image: ${IMG:-nginx:alpine}
    command: sh -c "sleep 1000"
    entrypoint: ["/bin/sh", "-e"]
    environment:
      B: three
      FROM_SHELL:
      UNSET:
    env_file: app.env
    ports: ["8080:80", "90", {target: 81, published: 8081, protocol: udp, mode: host}]
    networks: {front: {aliases: [www]}}
    secrets: [pw, {source: pw, target: other, mode: 0400}]
    configs: [conf]
    volumes: ["data:/data", "./here:/here:ro", {type: tmpfs, target: /tmp}]
    hostname: web-host
    user: "1000"
    working_dir: /srv
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    labels: [c=d]
    deploy:
      replicas: 2
      labels: {tier: web}
      placement:
        constraints: [node.role==manager]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 2
      resources:
        limits: {cpus: "0.5", memory: 64M, pids: 100}
        reservations: {cpus: "0.25", memory: 16M}
      restart_policy: {condition: on-failure, delay: 2s, max_attempts: 3, window: 10s}
      update_config: {parallelism: 1, delay: 1s, order: start-first, failure_action: rollback}
      rollback_config: {parallelism: 2, monitor: 5s}
    healthcheck: {test: ["CMD", "wget", "-q", "localhost"], interval: 5s, retries: 2, timeout: 2s}
    build: .
    restart: always
  worker:
    image: busybox
    deploy: {mode: global}
    healthcheck: {disable: true}
networks:
  front: {labels: {x: y}}
  unused: {}
secrets:
  pw: {file: ./pw.txt}
configs:
  conf: {file: ./app.env}
volumes:
  data:
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _plan(tmp_path: Path, text: str, env: dict[str, str] | None = None, *more: str) -> StackPlan:
    (tmp_path / "pw.txt").write_text("s3cret\n")
    (tmp_path / "app.env").write_text("A=1\nB=2\n")
    files = [_write(tmp_path, "compose.yml", text)]
    files += [_write(tmp_path, f"more{i}.yml", extra) for i, extra in enumerate(more)]
    return build_plan(files, "st", env or {})


def _refused(tmp_path: Path, text: str, *says: str) -> str:
    with pytest.raises(ComposeError) as caught:
        _plan(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    for part in says:
        assert part in message, message
    return message


def test_every_supported_key_becomes_service_create_options(tmp_path: Path) -> None:
    stack = _plan(tmp_path, FULL, {"FROM_SHELL": "yes"})
    web, worker = stack.services
    assert (web.name, worker.name) == ("st_web", "st_worker")
    p = web.params
    assert p["image"] == "nginx:alpine" and p["args"] == ["sh", "-c", "sleep 1000"]
    assert p["entrypoint"] == "/bin/sh -e"
    assert p["env"] == ["A=1", "B=three", "FROM_SHELL=yes"]  # environment wins over env_file
    assert p["publish"] == [
        "published=8080,target=80",
        "target=90",
        "target=81,published=8081,protocol=udp,mode=host",
    ]
    assert p["networks"] == ["name=st_front,alias=web,alias=www"]
    assert p["secrets"] == ["source=st_pw,target=pw", "source=st_pw,target=other,mode=0400"]
    assert p["configs"] == ["source=st_conf,target=/conf"]
    assert p["mounts"] == [
        "type=volume,source=st_data,target=/data",
        f"type=bind,source={tmp_path.resolve()}/here,target=/here,readonly",
        "type=tmpfs,target=/tmp",
    ]
    assert (p["hostname"], p["user"], p["workdir"]) == ("web-host", "1000", "/srv")
    assert (p["stop_signal"], p["stop_grace_period"]) == ("SIGINT", "1m30s")
    assert p["container_labels"] == ["c=d", "com.docker.stack.namespace=st"]
    assert p["labels"] == ["tier=web", "com.docker.stack.namespace=st", "com.docker.stack.image=nginx:alpine"]
    assert (p["replicas"], p["constraints"], p["placement_prefs"]) == (
        "2",
        ["node.role==manager"],
        ["spread=node.labels.zone"],
    )
    assert p["replicas_max_per_node"] == "2"
    assert (p["limit_cpu"], p["limit_memory"], p["limit_pids"]) == ("0.5", "64M", "100")
    assert (p["reserve_cpu"], p["reserve_memory"]) == ("0.25", "16M")
    assert (p["restart_condition"], p["restart_delay"], p["restart_max_attempts"], p["restart_window"]) == (
        "on-failure",
        "2s",
        "3",
        "10s",
    )
    assert (p["update_parallelism"], p["update_order"], p["update_failure_action"]) == (
        "1",
        "start-first",
        "rollback",
    )
    assert (p["rollback_parallelism"], p["rollback_monitor"]) == ("2", "5s")
    assert (p["health_cmd"], p["health_interval"], p["health_retries"]) == ("wget -q localhost", "5s", "2")
    assert worker.params["mode"] == "global" and worker.params["no_healthcheck"] is True
    assert worker.params["networks"] == ["name=st_default,alias=worker"]
    made = {(o.kind, o.name): o for o in stack.objects}
    assert sorted(made) == [
        ("config", "st_conf"),
        ("network", "st_default"),
        ("network", "st_front"),
        ("secret", "st_pw"),
    ]
    assert made[("network", "st_front")].labels == {"x": "y", "com.docker.stack.namespace": "st"}
    assert all(o.labels["com.docker.stack.namespace"] == "st" for o in made.values())
    assert made[("secret", "st_pw")].data == "czNjcmV0Cg=="
    assert stack.ignored == {"web": ["build", "restart"], "worker": []}


def test_no_default_network_when_every_service_names_one(tmp_path: Path) -> None:
    stack = _plan(tmp_path, "services: {a: {image: x, networks: [n]}}\nnetworks: {n: {}}\n")
    assert [o.name for o in stack.objects] == ["st_n"]


def test_external_objects_keep_their_names(tmp_path: Path) -> None:
    stack = _plan(
        tmp_path,
        "services: {a: {image: x, networks: [n], secrets: [s], volumes: [v:/v, w:/w]}}\n"
        "networks: {n: {external: true}}\nsecrets: {s: {external: true, name: real}}\n"
        "volumes: {v: {external: true}, w: {name: wide}}\n",
    )
    assert stack.services[0].params["mounts"] == [
        "type=volume,source=v,target=/v",
        "type=volume,source=wide,target=/w",
    ]
    assert {(o.name, o.external) for o in stack.objects} == {("n", True), ("real", True)}
    assert stack.services[0].params["secrets"] == ["source=real,target=s"]


def test_later_files_override_earlier_ones(tmp_path: Path) -> None:
    stack = _plan(
        tmp_path,
        "services: {a: {image: x:1, deploy: {replicas: 1, labels: [k=v]}}}\n",
        None,
        "services: {a: {image: x:2, deploy: {replicas: 3}}, b: {image: y}}\n",
    )
    a, b = stack.services
    assert (a.params["image"], a.params["replicas"], a.params["labels"][0]) == ("x:2", "3", "k=v")
    assert b.file.name == "more0.yml"


def test_interpolation_forms() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert (
        substitute("$SET ${SET} ${NO:-d} ${EMPTY:-d} ${EMPTY-d} ${NO-d} $$SET ${NO}", env)
        == "v v d d  d $SET "
    )
    with pytest.raises(InterpolationError, match="required variable NO is missing a value: say it"):
        substitute("${NO:?say it}", env)
    with pytest.raises(InterpolationError, match="invalid interpolation format"):
        substitute("cost $5", env)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "services: {web: {image: x, bogus: 1}}",
            "compose.yml: services.web: Additional property bogus is not allowed",
        ),
        (
            "services: {web: {image: x}}\nextra: 1",
            "compose.yml: (root): Additional property extra is not allowed",
        ),
        (
            "services: {web: {image: x, deploy: {replica: 2}}}",
            "services.web.deploy: Additional property replica",
        ),
        (
            "services: {web: {image: x, deploy: {resources: {limits: {gpu: 1}}}}}",
            "services.web.deploy.resources.limits: Additional property gpu",
        ),
        (
            "services: {web: {image: x, deploy: {replicas: two}}}",
            'services.web.deploy.replicas: invalid --replicas "two"',
        ),
        (
            "services: {web: {image: x, stop_grace_period: soon}}",
            "services.web.stop_grace_period: invalid --stop-grace-period",
        ),
        (
            "services: {web: {image: x, networks: [nope]}}",
            'services.web.networks.nope: network "nope" is not declared',
        ),
        (
            "services: {web: {image: x, secrets: [nope]}}",
            'services.web.secrets[0]: secret "nope" is not declared',
        ),
        ("services: {web: {command: x}}", "services.web: has no image"),
        ("services: {web: {image: x, ports: ['1.2.3.4:80:80']}}", "a host IP is not supported"),
        (
            "services: {web: {image: '${IMG:?set IMG}'}}",
            "compose.yml: services.web.image: required variable IMG",
        ),
        ("services: {web: [oops", "compose.yml: line"),
        ("services: {web: {image: x, read_only: maybe}}", "services.web.read_only: must be true or false"),
        (
            "services: {web: {image: x, deploy: {mode: global, replicas: 2}}}",
            "services.web.deploy.replicas: --replicas can only be used with replicated mode",
        ),
        (
            "services: {web: {image: x, deploy: {mode: daemon}}}",
            'services.web.deploy.mode: invalid --mode "daemon"',
        ),
        ("services: {}", "the stack has no services"),
        (
            "services: {web: {image: x}}\nsecrets: {s: {file: ./missing}}",
            "compose.yml: secrets.s.file: cannot read",
        ),
        (
            "services: {web: {image: x}}\nconfigs: {c: {file: /dev/zero}}",
            "compose.yml: configs.c.file: /dev/zero is too large",
        ),
    ],
)
def test_bad_files_are_one_line_naming_file_service_and_key(tmp_path: Path, text: str, says: str) -> None:
    _refused(tmp_path, text, says)


def _control() -> tuple[ObjectStore, ControlAPI]:
    store = ObjectStore()
    store.provider = InstantLog(store)  # type: ignore[assignment]
    return store, ControlAPI(store, node_id="n1")


def test_replace_update_leaves_an_unchanged_service_alone(tmp_path: Path) -> None:
    """A redeploy sends the whole spec: the same spec is no new version and no update; a changed
    one is a new version with the old kept as the previous spec (a rolling update)."""
    stack = _plan(tmp_path, "services: {a: {image: x:1, deploy: {replicas: 2}, environment: [K=1]}}\n")
    params: dict[str, Any] = {k: v for k, v in stack.services[0].params.items() if k != "networks"}

    async def run() -> tuple[int, int, int, str]:
        store, control = _control()

        def seed(tx: Any) -> None:
            tx.create(pb.Cluster(id="c1", spec=defaults.cluster_spec()))

        await store.update(seed)
        created = await control.handlers()["service.create"](params)
        update = control.handlers()["service.update"]
        before = store.view.services.get(created["ID"]).meta.version
        same = await update({**params, "service": created["ID"], "replace": True})
        first = store.view.services.get(created["ID"])
        changed = {**params, "env": ["K=2"], "service": created["ID"], "replace": True}
        moved = await update(changed)
        second = store.view.services.get(created["ID"])
        assert same == {"ID": created["ID"], "Changed": False} and "Changed" not in moved
        return (
            first.spec_version,
            first.meta.version - before,
            second.spec_version,
            second.previous_spec.task.container.env[0],
        )

    first_version, writes, second_version, previous_env = asyncio.run(run())
    assert first_version == 1 and writes == 0 and second_version == 2 and previous_env == "K=1"


def test_a_published_port_another_service_has_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    from shoal.cli.stack_cmd import port_conflicts

    stack = _plan(tmp_path, "services: {a: {image: x, ports: ['8080:80', '9090:90/udp', '7070:70']}}\n")
    other = {"Name": "other", "Ports": "*:8080->8000/tcp"}
    assert port_conflicts(stack, [other]) == (
        f"{tmp_path}/compose.yml: services.a.ports: port 8080/tcp is already published by service other"
    )
    assert port_conflicts(stack, [{"Name": "other", "Ports": "*:9090->90/tcp, *:7070->70/udp"}]) == ""
    assert port_conflicts(stack, [{"Name": "st_a", "Ports": "*:8080->80/tcp"}]) == ""  # its own, redeployed
    twice = _plan(
        tmp_path, "services: {a: {image: x, ports: ['8080:80']}, b: {image: x, ports: ['8080:81']}}\n"
    )
    assert "services.b.ports: port 8080/tcp is already published by service st_a" in port_conflicts(twice, [])


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path: Path) -> None:
    """The files are read with YAML's safe loader: a tag that would run code on the deploying
    machine is one line, and nothing runs."""
    marker = tmp_path / "ran"
    text = f"services: !!python/object/apply:os.system ['touch {marker}']\n"
    _refused(tmp_path, text, "compose.yml:")
    assert not marker.exists()
