"""Issue 17 item 10: docker's container options on ``service create``/``service update``, the
generated service name and the ``swarm init`` settings.

Fast tests check the parsing (manager side, ``shoal.specs``; client side, the CLI's flags and
``--env-file``); one real-daemon test per runtime checks that a container really gets the options
(its engine's inspect and the container's own ``/proc``), their ``-add``/``-rm`` forms on update,
and that a bad value changes nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from engines import Engine
from harness import TEST_IMAGE, ShoalNode, wait_until
from shoal import identity, namegen, placement
from shoal.cli.service_opts import (
    DockerFlagsCommand,
    common_options,
    create_options,
    env_from_files,
    params_of,
)
from shoal.manager import clustersettings
from shoal.plugin import PluginContext
from shoal.proto import objects_pb2 as pb
from shoal.runtimekit import task as runtime_task
from shoal.specs import SpecError, service_spec, updated_spec
from shoal.testing.scheduler import make_node, make_task
from shoal_runtime_docker.runtime import host_options as docker_host_options
from shoal_runtime_podman.runtime import container_options as podman_container_options
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.provider import RaftStore

Factory = Callable[..., ShoalNode]

# ----------------------------------------------------------------------------- parsing (fast)


def _create(**params: Any) -> pb.ServiceSpec:
    return service_spec({"name": "web", "image": "busybox", **params})


def test_create_stores_every_option_in_swarms_fields() -> None:
    spec = _create(
        cap_add=["net_admin", "CAP_SYS_TIME"],
        cap_drop=["chown"],
        read_only="true",
        init=True,
        tty=True,
        sysctl=["net.core.somaxconn=1024"],
        ulimit=["nofile=512:1024", "nproc=100"],
        dns=["10.0.0.2"],
        dns_search=["example.com"],
        dns_option=["ndots:2"],
        host=["db.local:10.1.2.3", "v6:::1"],
        group=["audio", "1234"],
        log_driver="json-file",
        log_opt=["max-size=10m"],
        limit_pids="64",
        generic_resource=["gpu=2"],
    )
    container = spec.task.container
    assert list(container.capability_add) == ["CAP_NET_ADMIN", "CAP_SYS_TIME"]
    assert list(container.capability_drop) == ["CAP_CHOWN"]
    assert container.read_only and container.init and container.tty
    assert dict(container.sysctls) == {"net.core.somaxconn": "1024"}
    assert [(u.name, u.soft, u.hard) for u in container.ulimits] == [
        ("nofile", 512, 1024),
        ("nproc", 100, 100),
    ]
    assert list(container.dns_config.nameservers) == ["10.0.0.2"]
    assert list(container.dns_config.search) == ["example.com"]
    assert list(container.dns_config.options) == ["ndots:2"]
    assert list(container.hosts) == ["10.1.2.3 db.local", "::1 v6"]
    assert list(container.groups) == ["audio", "1234"]
    assert spec.task.log_driver.name == "json-file"
    assert dict(spec.task.log_driver.options) == {"max-size": "10m"}
    assert spec.task.resources.limits.pids == 64
    assert [(g.kind, g.value) for g in spec.task.resources.reservations.generic] == [("gpu", 2)]


def test_update_add_and_rm_forms() -> None:
    spec = _create(
        cap_add=["NET_ADMIN"],
        sysctl=["net.core.somaxconn=1024", "net.ipv4.tcp_syncookies=1"],
        ulimit=["nofile=512:1024"],
        dns=["10.0.0.2", "10.0.0.3"],
        dns_search=["a.example"],
        host=["db:10.0.0.5", "db:10.0.0.6", "cache:10.0.0.7"],
        group=["audio"],
        generic_resource=["gpu=2", "fpga=1"],
        log_driver="json-file",
        log_opt=["max-size=10m"],
        read_only=True,
    )
    new = updated_spec(
        spec,
        {
            "cap_drop": ["NET_ADMIN"],
            "cap_add": ["SYS_TIME"],
            "sysctl_rm": ["net.core.somaxconn"],
            "sysctl_add": ["net.ipv4.tcp_syncookies=0"],
            "ulimit_add": ["nofile=256:512", "nproc=50"],
            "dns_rm": ["10.0.0.2"],
            "dns_add": ["10.0.0.9"],
            "dns_search_add": ["b.example"],
            "dns_option_add": ["timeout:3"],
            "host_rm": ["db"],
            "host_add": ["web:10.0.0.8"],
            "group_rm": ["audio"],
            "group_add": ["video"],
            "generic_resource_rm": ["fpga"],
            "generic_resource_add": ["gpu=1"],
            "log_opt": ["max-file=3"],
            "read_only": "false",
            "tty": "1",
            "limit_pids": "0",
        },
    )
    container = new.task.container
    assert list(container.capability_add) == ["CAP_SYS_TIME"]
    assert list(container.capability_drop) == ["CAP_NET_ADMIN"]
    assert dict(container.sysctls) == {"net.ipv4.tcp_syncookies": "0"}
    assert [(u.name, u.soft, u.hard) for u in container.ulimits] == [("nofile", 256, 512), ("nproc", 50, 50)]
    assert list(container.dns_config.nameservers) == ["10.0.0.3", "10.0.0.9"]
    assert list(container.dns_config.search) == ["a.example", "b.example"]
    assert list(container.dns_config.options) == ["timeout:3"]
    assert list(container.hosts) == ["10.0.0.7 cache", "10.0.0.8 web"]
    assert list(container.groups) == ["video"]
    assert [(g.kind, g.value) for g in new.task.resources.reservations.generic] == [("gpu", 1)]
    assert dict(new.task.log_driver.options) == {"max-size": "10m", "max-file": "3"}
    assert not container.read_only and container.tty
    assert new.task.resources.limits.pids == 0
    # --host-rm HOST:IP removes that line only; --log-driver "" goes back to the engine's default
    newer = updated_spec(new, {"host_rm": ["cache:10.0.0.7"], "log_driver": ""})
    assert list(newer.task.container.hosts) == ["10.0.0.8 web"]
    assert not newer.task.HasField("log_driver")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cap_add": ["NET_FLY"]}, 'invalid --cap-add "NET_FLY": unknown capability'),
        ({"cap_add": ["CHOWN"], "cap_drop": ["chown"]}, "--cap-add and --cap-drop both name CAP_CHOWN"),
        ({"read_only": "maybe"}, 'invalid --read-only "maybe": use true or false'),
        ({"sysctl": ["novalue"]}, 'invalid --sysctl "novalue": use KEY=VALUE'),
        ({"ulimit": ["files=10"]}, 'invalid --ulimit "files=10": use NAME=SOFT[:HARD]'),
        ({"ulimit": ["nofile=2048:1024"]}, "the soft limit must not exceed the hard limit"),
        ({"ulimit": ["nofile=lots"]}, 'invalid --ulimit "nofile=lots": limits are whole numbers'),
        ({"dns": ["dns.google"]}, 'invalid --dns "dns.google": give a nameserver IP address'),
        ({"dns_search": ["-bad-.com"]}, 'invalid --dns-search "-bad-.com": give a domain name'),
        ({"dns_option": ["a b"]}, 'invalid --dns-option "a b"'),
        ({"host": ["db"]}, 'invalid --host "db": use HOST:IP'),
        ({"host": ["db:10.0.0.300"]}, 'invalid --host "db:10.0.0.300": use HOST:IP'),
        ({"group": ["two words"]}, 'invalid --group "two words"'),
        ({"log_opt": ["max-size=1m"]}, "--log-opt needs a --log-driver"),
        ({"log_driver": "a b"}, 'invalid --log-driver "a b"'),
        ({"limit_pids": "-1"}, 'invalid --limit-pids "-1": give a whole number of processes'),
        ({"generic_resource": ["gpu"]}, 'invalid --generic-resource "gpu": use KIND=COUNT'),
        ({"generic_resource": ["gpu=0"]}, "the count must be a whole number of 1 or more"),
    ],
)
def test_bad_values_are_one_line_naming_the_option(params: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        _create(**params)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_generated_names_are_adjective_surname_and_unused() -> None:
    assert re.fullmatch(r"[a-z]+_[a-z]+", namegen.random_name())
    taken = {f"{a}_{s}" for a in namegen.ADJECTIVES for s in namegen.SURNAMES}
    name = namegen.unused_name(lambda n: n in taken)
    assert name not in taken and re.fullmatch(r"[a-z]+_[a-z]+[0-9a-f_]*", name)


@click.command(cls=DockerFlagsCommand, context_settings={"allow_interspersed_args": False})
@create_options
@common_options
@click.argument("image")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def _probe(image: str, args: tuple[str, ...], **options: Any) -> None:
    click.echo(json.dumps(params_of(options), sort_keys=True))


def _parsed(*argv: str) -> dict[str, Any]:
    result = CliRunner().invoke(_probe, list(argv))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_boolean_flags_take_dockers_forms() -> None:
    assert _parsed("--read-only", "--init", "-t", "img") == {"init": True, "read_only": True, "tty": True}
    assert _parsed("--read-only=false", "--tty=true", "img", "--init=false")["read_only"] is False
    assert "init" not in _parsed("img", "--init=false")  # after the image: the container's arguments
    bad = CliRunner().invoke(_probe, ["--init=perhaps", "img"])
    assert bad.exit_code == 2 and 'invalid --init "perhaps"' in bad.output


def test_env_file_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_SHELL", "shell value")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    envfile = tmp_path / "app.env"
    envfile.write_text("# a comment\n\nA=1\nB=two words=x\nFROM_SHELL\nUNSET_HERE\n")
    assert env_from_files([str(envfile)]) == ["A=1", "B=two words=x", "FROM_SHELL=shell value"]
    envfile.write_text("GOOD=1\nBAD KEY=2\n")
    with pytest.raises(click.UsageError, match='line 2: "BAD KEY" is not a variable name'):
        env_from_files([str(envfile)])
    with pytest.raises(click.UsageError, match=r"invalid --env-file .*missing\.env"):
        env_from_files([str(tmp_path / "missing.env")])


# ----------------------------------------------------------------------------- real daemons


def _inspect(engine: Engine, container_id: str) -> dict[str, Any]:
    if engine.name == "docker":
        return engine.client.api.inspect_container(container_id)  # type: ignore[no-any-return]
    response = engine.client.api.get(f"/containers/{container_id}/json")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def _one_container(node: ShoalNode, engine: Engine, node_id: str, service: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        running = engine.service_containers(node_id, service)
        if len(running) != 1 or not node.running(service):
            return None
        state = _inspect(engine, running[0].id)
        return state if state["State"].get("Pid") else None

    return wait_until(found, 90, what=f"one running container of {service}")


@pytest.mark.cluster
def test_container_options_reach_the_container(
    node_factory: Factory, runtime_name: str, engine: Engine, tmp_path: Path
) -> None:
    node = node_factory(runtime=runtime_name).start()
    node.init()
    node_id = node.node_id()
    envfile = tmp_path / "app.env"
    envfile.write_text("# settings\nFROM_FILE=yes\nOVERRIDDEN=file\n")
    service_id = node.ok(
        "service", "create", "--detach", "--no-resolve-image",
        "--env-file", str(envfile), "-e", "OVERRIDDEN=flag",
        "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN", "--read-only", "--init", "-t",
        "--sysctl", "net.ipv4.ip_unprivileged_port_start=99",
        "--ulimit", "nofile=512:1024",
        "--dns", "10.9.8.7", "--dns-search", "example.com", "--dns-option", "ndots:2",
        "--host", "db.local:10.1.2.3", "--group", "1234",
        "--log-driver", "json-file", "--limit-pids", "64",
        TEST_IMAGE, "sleep", "3600",
    ).stdout.strip()  # fmt: skip
    shape = json.loads(node.ok("service", "inspect", service_id).stdout)[0]
    name = shape["Spec"]["Name"]
    assert re.fullmatch(r"[a-z]+_[a-z]+[0-9]?", name), name  # generated, docker's style
    spec = shape["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["CapabilityAdd"] == ["CAP_NET_ADMIN"] and spec["ReadOnly"] is True and spec["Init"] is True
    assert spec["DNSConfig"]["Nameservers"] == ["10.9.8.7"] and spec["Hosts"] == ["10.1.2.3 db.local"]
    assert shape["Spec"]["TaskTemplate"]["Resources"]["Limits"]["Pids"] == 64

    state = _one_container(node, engine, node_id, name)
    pid = int(state["State"]["Pid"])
    host = state["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["Init"] is True and state["Config"]["Tty"] is True
    sysctl = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert sysctl.strip() == "99"  # in the container's network namespace (podman 4.3's inspect omits it)
    assert host["PidsLimit"] == 64
    assert host["LogConfig"]["Type"] in ("json-file", "k8s-file")  # podman's name for json-file
    env = state["Config"]["Env"]
    assert "FROM_FILE=yes" in env and "OVERRIDDEN=flag" in env and "OVERRIDDEN=file" not in env
    # What the process itself has, read from the host through /proc
    status = _proc(pid, "status")
    caps = int(re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M).group(1), 16)  # type: ignore[union-attr]
    assert caps & (1 << 12), "CAP_NET_ADMIN (12) is effective"
    assert not caps & (1 << 0), "CAP_CHOWN (0) is dropped"
    assert "1234" in re.search(r"^Groups:(.*)$", status, re.M).group(1).split()  # type: ignore[union-attr]
    assert re.search(r"^Max open files\s+512\s+1024\s", _proc(pid, "limits"), re.M)
    resolv = Path(f"/proc/{pid}/root/etc/resolv.conf").read_text()
    assert "nameserver 10.9.8.7" in resolv and "example.com" in resolv and "ndots:2" in resolv
    assert re.search(r"^10\.1\.2\.3\s+db\.local", Path(f"/proc/{pid}/root/etc/hosts").read_text(), re.M)
    mounts = _proc(pid, "mountinfo").splitlines()
    root_mount = next(line for line in mounts if line.split()[4] == "/")
    assert "ro" in root_mount.split()[5].split(","), root_mount
    assert not [line for line in mounts if line.split()[4] in ("/tmp", "/var/tmp")]  # no tmpfs added (podman)
    assert Path(f"/proc/{pid}/fd/0").readlink().as_posix().startswith("/dev/pts/")  # a tty
    ppid_of_sleep = [
        p for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == pid and _comm(p) == "sleep"
    ]
    assert ppid_of_sleep, "PID 1 is an init that runs the command as its child"

    # update: -add/-rm forms and booleans reach a new container
    node.ok(
        "service", "update", "--detach", "--cap-drop", "NET_ADMIN", "--read-only=false",
        "--ulimit-rm", "nofile", "--dns-rm", "10.9.8.7", "--dns-add", "10.9.8.6",
        "--host-rm", "db.local", "--host-add", "cache.local:10.4.5.6", "--limit-pids", "32", name,
    )  # fmt: skip

    def updated() -> dict[str, Any] | None:
        state = _one_container(node, engine, node_id, name)
        return state if state["HostConfig"].get("PidsLimit") == 32 else None

    state = wait_until(updated, 90, what="the updated container")
    pid = int(state["State"]["Pid"])
    assert state["HostConfig"]["ReadonlyRootfs"] is False
    caps = int(re.search(r"^CapEff:\s*([0-9a-f]+)", _proc(pid, "status"), re.M).group(1), 16)  # type: ignore[union-attr]
    assert not caps & (1 << 12), "CAP_NET_ADMIN dropped by the update"
    assert not re.search(r"^Max open files\s+512\s", _proc(pid, "limits"), re.M)
    resolv = Path(f"/proc/{pid}/root/etc/resolv.conf").read_text()
    assert "nameserver 10.9.8.6" in resolv and "10.9.8.7" not in resolv
    hosts = Path(f"/proc/{pid}/root/etc/hosts").read_text()
    assert "cache.local" in hosts and "db.local" not in hosts

    # a bad value: one line naming the option, exit 2, the spec unchanged
    before = json.loads(node.ok("service", "inspect", name).stdout)[0]["Spec"]
    for args, words in (
        (["--ulimit-add", "nofile=9:1"], 'invalid --ulimit-add "nofile=9:1"'),
        (["--cap-add", "FLY"], 'invalid --cap-add "FLY"'),
        (["--tty=sometimes"], 'invalid --tty "sometimes"'),
    ):
        bad = node.cli("service", "update", "--detach", *args, name)
        assert bad.returncode == 2 and words in bad.stderr and bad.stderr.strip().count("\n") == 0, bad
    assert json.loads(node.ok("service", "inspect", name).stdout)[0]["Spec"] == before


def _ppid(proc_dir: Path) -> int:
    try:
        fields = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[1])


def _comm(proc_dir: Path) -> str:
    try:
        return (proc_dir / "comm").read_text().strip()
    except OSError:
        return ""


# ----------------------------------------------------------------------------- swarm settings


def test_cluster_settings_parse_and_refuse() -> None:
    cluster = pb.Cluster()
    for change in clustersettings.changes(
        {
            "cert_expiry": "48h",
            "dispatcher_heartbeat": "7s",
            "task_history_limit": "-1",
            "snapshot_interval": "500",
            "max_snapshots": "2",
        }
    ):
        change(cluster)
    spec = cluster.spec
    assert spec.ca_config.node_cert_expiry == 48 * 3600 and spec.dispatcher.heartbeat_period == 7
    assert spec.orchestration.task_history_retention_limit == -1
    assert spec.raft.snapshot_interval == 500 and spec.raft.keep_old_snapshots == 2
    for params, message in (
        ({"snapshot_interval": "0"}, 'invalid --snapshot-interval "0": must be at least 1'),
        ({"max_snapshots": "-1"}, 'invalid --max-snapshots "-1": must be at least 0'),
        ({"dispatcher_heartbeat": "0s"}, 'invalid --dispatcher-heartbeat "0s": must be positive'),
        ({"cert_expiry": "soon"}, 'invalid --cert-expiry "soon": give a duration'),
    ):
        with pytest.raises(SpecError, match=re.escape(message)):
            clustersettings.changes(params)


def test_raft_store_takes_the_swarms_snapshot_interval(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, RaftOptions(snapshot_interval=10000))
    store.tune({"snapshot_interval": 42})
    assert store.options.snapshot_interval == 42
    store.tune({"tick_ms": 100})  # a missing key keeps its value
    assert store.options.snapshot_interval == 42
    with pytest.raises(ValueError, match="snapshot interval"):
        store.tune({"snapshot_interval": 0})
    own = RaftStore.from_context(PluginContext("store", "raft", tmp_path, {"snapshot-interval": "5"}))
    own.tune({"snapshot_interval": 42})  # the daemon's --plugin-opt store.snapshot-interval wins
    assert own.options.snapshot_interval == 5


@pytest.mark.cluster
def test_swarm_init_and_update_settings(node_factory: Factory) -> None:
    refused = node_factory("refused").start()
    bad = refused.cli("swarm", "init", "--advertise-addr", refused.addr, "--max-snapshots", "many")
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == 'Error: invalid --max-snapshots "many": give a whole number'
    )
    assert refused.info()["Swarm"] == "inactive" and not refused.info().get("NodeID")  # nothing created

    node = node_factory().start()
    node.init(
        "--cert-expiry", "48h", "--dispatcher-heartbeat", "7s", "--task-history-limit", "3",
        "--snapshot-interval", "500", "--max-snapshots", "2",
    )  # fmt: skip
    lines = node.ok("info").stdout.splitlines()
    for expected in (
        "  Task History Retention Limit: 3",
        "  Snapshot Interval: 500",
        "  Number of Old Snapshots to Retain: 2",
        "  Heartbeat Period: 7 seconds",
        "  Expiry Duration: 2 days",
    ):
        assert expected in lines, (expected, lines)
    swarm = json.loads(node.ok("swarm", "inspect").stdout)
    assert swarm["Spec"]["Raft"]["SnapshotInterval"] == 500 and swarm["Spec"]["Raft"]["KeepOldSnapshots"] == 2
    assert swarm["Spec"]["CAConfig"]["NodeCertExpiry"] == 48 * 3600 * 10**9
    assert swarm["Spec"]["Dispatcher"]["HeartbeatPeriod"] == 7 * 10**9
    assert (
        node.ok("swarm", "inspect", "--format", "{{.Spec.Orchestration.TaskHistoryRetentionLimit}}").stdout
        == "3\n"
    )
    # the first manager's own certificate already has the swarm's validity
    certificate = identity.load_certificate(
        (node.state_dir / "certificates" / identity.CERT_FILE).read_bytes()
    )
    left = certificate.not_valid_after_utc - datetime.now(UTC)  # (not_before is backdated)
    assert abs(left.total_seconds() - 48 * 3600) < 600, left

    node.ok("swarm", "update", "--snapshot-interval", "600", "--max-snapshots", "0")
    raft = json.loads(node.ok("swarm", "inspect").stdout)["Spec"]["Raft"]
    assert raft["SnapshotInterval"] == 600 and raft["KeepOldSnapshots"] == 0
    bad = node.cli("swarm", "update", "--snapshot-interval", "0", "--task-history-limit", "9")
    assert bad.returncode == 2 and 'invalid --snapshot-interval "0"' in bad.stderr
    assert (
        json.loads(node.ok("swarm", "inspect").stdout)["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"]
        == 3
    )


def test_runtimes_map_the_spec_to_engine_options() -> None:
    spec = _create(
        cap_add=["NET_ADMIN"], read_only=True, init=True, ulimit=["nofile=512:1024"], dns=["10.9.8.7"],
        dns_search=["example.com"], host=["db:10.1.2.3"], group=["1234"], limit_pids="64",
        log_driver="json-file", log_opt=["max-size=1m"],
    )  # fmt: skip
    task = pb.Task(id="t1", node_id="n1", spec=spec.task)
    task.networks.add()  # on a swarm network: the swarm resolver stays first
    assert runtime_task.nameservers(task) == [runtime_task.SWARM_RESOLVER, "10.9.8.7"]
    docker = docker_host_options(task)
    assert docker["dns"] == ["127.0.0.11", "10.9.8.7"] and docker["extra_hosts"] == ["db:10.1.2.3"]
    assert docker["ulimits"] == [{"name": "nofile", "soft": 512, "hard": 1024}] and docker["pids_limit"] == 64
    assert docker["log_config"] == {"type": "json-file", "config": {"max-size": "1m"}}
    assert docker["read_only"] and docker["init"] and docker["cap_add"] == ["CAP_NET_ADMIN"]
    podman = podman_container_options(task)
    assert podman["dns_server"] == ["127.0.0.11", "10.9.8.7"] and podman["hostadd"] == ["db:10.1.2.3"]
    assert {"type": "nofile", "soft": 512, "hard": 1024} in podman["r_limits"]
    assert [u["type"] for u in podman["r_limits"]].count("nofile") == 1  # the spec's replaces the default
    assert podman["read_only_filesystem"] and podman["read_write_tmpfs"] is False and podman["init"]
    assert podman["log_configuration"] == {"driver": "json-file", "options": {"max-size": "1m"}}
    bare = pb.Task(id="t2", node_id="n1", spec=_create().task)
    assert docker_host_options(bare) == {} and set(podman_container_options(bare)) == {"r_limits"}


def test_generic_resources_limit_where_tasks_go() -> None:
    gpu_node = make_node("gpu")
    gpu_node.description.resources.generic.add(kind="gpu", value=2)
    plain = make_node("plain")
    wanting = make_task("t1")
    wanting.spec.resources.reservations.generic.add(kind="gpu", value=1)
    placed = make_task("t0", node_id="gpu")
    placed.spec.resources.reservations.generic.add(kind="gpu", value=1)
    infos = placement.build_node_infos([gpu_node, plain], [placed])
    assert infos["gpu"].available_generic == {"gpu": 1} and infos["plain"].available_generic == {}
    pipeline = placement.Pipeline().set_task(wanting)
    assert [pipeline.process(info) for info in infos.values()] == [True, False]
    assert pipeline.explain() == "insufficient resources on 1 node"
    infos["gpu"].add_task(wanting)  # the last gpu taken: nobody fits any more
    assert not pipeline.recheck(infos["gpu"])
    infos["gpu"].remove_task(wanting)
    assert infos["gpu"].available_generic == {"gpu": 1}


@pytest.mark.cluster
def test_generic_resources_reserve_what_the_node_offers(node_factory: Factory) -> None:
    bad = node_factory("badres", extra_args=["--node-generic-resource", "gpu"])
    started = subprocess.run(bad.daemon_args(), capture_output=True, text=True, timeout=60)
    assert started.returncode == 2
    assert 'invalid --node-generic-resource "gpu": use KIND=COUNT' in started.stderr

    node = node_factory(extra_args=["--node-generic-resource", "gpu=1"]).start()
    node.init()
    offered = json.loads(node.ok("node", "inspect", "self").stdout)[0]["Description"]["Resources"]
    assert offered["GenericResources"] == [{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}}]
    node.ok(
        "service", "create", "--detach", "--name", "trainer", "--replicas", "2",
        "--generic-resource", "gpu=1", "--stop-grace-period", "0s", TEST_IMAGE, "sleep", "3600",
    )  # fmt: skip

    def one_running_one_waiting() -> list[dict[str, Any]] | None:
        tasks = node.tasks("trainer")
        pending = [t for t in tasks if "insufficient resources on 1 node" in t.get("Error", "")]
        return tasks if len(node.running("trainer")) == 1 and pending else None

    wait_until(one_running_one_waiting, 90, what="one task on the node's only gpu, one waiting")
    node.ok("service", "update", "--detach", "--generic-resource-rm", "gpu", "trainer")
    wait_until(lambda: len(node.running("trainer")) == 2, 90, what="both tasks once gpu is not reserved")
