"""Issue 17 item 7: ``inspect`` prints Docker's JSON shapes, runs ``--format`` Go templates and
draws docker's ``--pretty`` blocks.

Logic tests build protobuf objects and check the mapping (``shoal.dockershapes``), the template
subset (``shoal.cli.gotemplate``) and the human blocks; one real-cluster test (a manager and a
worker, real engine) checks what ``service``/``node``/``secret``/``config inspect`` and
``shoal inspect --type task`` print, including a worker's role.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from harness import TEST_IMAGE, ShoalNode, start_cluster, wait_until
from shoal import dockershapes
from shoal.cli import gotemplate
from shoal.cli.inspect_pretty import bytes_size, go_duration, node_pretty, service_pretty
from shoal.proto import objects_pb2 as pb

RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


def sample_service() -> pb.Service:
    spec = pb.ServiceSpec(
        annotations=pb.Annotations(name="web", labels={"team": "core", "app": "web"}),
        task=pb.TaskSpec(
            container=pb.ContainerSpec(
                image="nginx:1",
                args=["sh", "-c", "sleep 1000"],
                env=["A=1"],
                stop_grace_period=10,
                mounts=[pb.Mount(type=pb.Mount.BIND, source="/srv", target="/data", readonly=True)],
                secrets=[
                    pb.SecretReference(
                        secret_id="s1", secret_name="db", file=pb.FileTarget(name="db", mode=0o444)
                    )
                ],
            ),
            resources=pb.ResourceRequirements(limits=pb.Resources(nano_cpus=500_000_000, memory_bytes=2**30)),
            restart=pb.RestartPolicy(condition=pb.RestartPolicy.ON_FAILURE, delay=5, max_attempts=3),
            placement=pb.Placement(
                constraints=["node.role==worker"], preferences=["spread=node.labels.zone"]
            ),
        ),
        replicated=pb.ReplicatedService(replicas=3),
        update=pb.UpdateConfig(parallelism=1, delay=10, monitor=5, order=pb.UpdateConfig.START_FIRST),
        rollback=pb.UpdateConfig(parallelism=1, failure_action=pb.UpdateConfig.CONTINUE),
        endpoint=pb.EndpointSpec(ports=[pb.PortConfig(target_port=80, published_port=8080)]),
    )
    return pb.Service(
        id="svc1",
        meta=pb.Meta(version=42, created_at=1765000000.5, updated_at=1765000001.123456),
        spec=spec,
        endpoint=pb.Endpoint(spec=spec.endpoint, ports=[pb.PortConfig(target_port=80, published_port=8080)]),
        update_status=pb.UpdateStatus(state=pb.UpdateStatus.COMPLETED, started_at=1765000002, message="done"),
    )


def test_service_shape_uses_docker_names_numbers_times_and_enums() -> None:
    shape = dockershapes.service_shape(sample_service())
    assert shape["ID"] == "svc1" and shape["Version"] == {"Index": 42}
    assert shape["CreatedAt"] == "2025-12-06T05:46:40.5Z"
    assert RFC3339_NANO.match(shape["UpdatedAt"]) and shape["UpdatedAt"].startswith(
        "2025-12-06T05:46:41.123456"
    )
    spec = shape["Spec"]
    assert spec["Name"] == "web" and list(spec["Labels"]) == ["app", "team"]  # sorted, as Go marshals maps
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == "nginx:1" and container["Args"] == ["sh", "-c", "sleep 1000"]
    assert container["StopGracePeriod"] == 10_000_000_000
    assert container["Mounts"] == [{"Type": "bind", "Source": "/srv", "Target": "/data", "ReadOnly": True}]
    assert container["Secrets"] == [
        {"File": {"Name": "db", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": "s1", "SecretName": "db"}
    ]
    assert "Command" not in container  # omitempty, as docker
    template = spec["TaskTemplate"]
    assert template["RestartPolicy"] == {"Condition": "on-failure", "Delay": 5_000_000_000, "MaxAttempts": 3}
    assert template["Placement"]["Preferences"] == [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]
    assert template["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 2**30}
    assert spec["UpdateConfig"]["Order"] == "start-first" and spec["UpdateConfig"]["Delay"] == 10_000_000_000
    assert spec["RollbackConfig"]["FailureAction"] == "continue"
    assert spec["EndpointSpec"] == {
        "Mode": "vip",
        "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}],
    }
    assert shape["Endpoint"]["Ports"][0]["PublishedPort"] == 8080
    assert shape["UpdateStatus"]["State"] == "completed" and "CompletedAt" not in shape["UpdateStatus"]
    assert "PreviousSpec" not in shape
    unallocated = sample_service()
    unallocated.ClearField("endpoint")
    unallocated.spec.endpoint.mode = pb.EndpointSpec.DNSRR
    assert dockershapes.service_shape(unallocated)["Endpoint"]["Spec"]["Mode"] == "dnsrr"
    global_service = sample_service()
    global_service.spec.ClearField("replicated")
    getattr(global_service.spec, "global").SetInParent()
    assert dockershapes.service_shape(global_service)["Spec"]["Mode"] == {"Global": {}}


def test_zero_times_and_a_worker_role_are_present() -> None:
    worker = pb.Node(id="n1", description=pb.NodeDescription(hostname="w1"))
    shape = dockershapes.node_shape(worker)
    assert shape["CreatedAt"] == dockershapes.ZERO_TIME
    assert shape["Spec"] == {"Labels": {}, "Role": "worker", "Availability": "active"}
    assert shape["Status"] == {"State": "unknown", "Addr": ""}
    assert "ManagerStatus" not in shape
    manager = pb.Node(
        id="n2",
        role=pb.NodeSpec.MANAGER,
        spec=pb.NodeSpec(desired_role=pb.NodeSpec.MANAGER, availability=pb.NodeSpec.DRAIN),
        status=pb.NodeStatus(state=pb.NodeStatus.READY, addr="10.0.0.2"),
        manager_status=pb.ManagerStatus(
            leader=True, reachability=pb.ManagerStatus.REACHABLE, addr="10.0.0.2:2377"
        ),
    )
    shape = dockershapes.node_shape(manager)
    assert shape["Spec"]["Role"] == "manager" and shape["Spec"]["Availability"] == "drain"
    assert shape["ManagerStatus"] == {"Leader": True, "Reachability": "reachable", "Addr": "10.0.0.2:2377"}


def test_task_secret_and_config_shapes() -> None:
    task = pb.Task(
        id="t1",
        service_id="svc1",
        slot=2,
        node_id="n1",
        status=pb.TaskStatus(
            timestamp=1765000000,
            state=pb.RUNNING,
            message="started",
            container=pb.ContainerStatus(container_id="c1", pid=42),
        ),
        desired_state=pb.RUNNING,
    )
    shape = dockershapes.task_shape(task)
    assert shape["Status"]["State"] == "running" and shape["DesiredState"] == "running"
    assert shape["Status"]["ContainerStatus"] == {"ContainerID": "c1", "PID": 42, "ExitCode": 0}
    assert shape["Status"]["Timestamp"] == "2025-12-06T05:46:40Z"
    assert shape["Slot"] == 2 and shape["NodeID"] == "n1" and shape["ServiceID"] == "svc1"
    secret = pb.Secret(id="s1", spec=pb.SecretSpec(annotations=pb.Annotations(name="db"), data=b"sealed"))
    assert dockershapes.secret_shape(secret)["Spec"] == {"Name": "db", "Labels": {}}
    assert "sealed" not in json.dumps(dockershapes.secret_shape(secret, "internal"))
    config = pb.Config(id="c1", spec=pb.ConfigSpec(annotations=pb.Annotations(name="cfg"), data=b"x=1"))
    assert dockershapes.config_shape(config)["Spec"]["Data"] == base64.b64encode(b"x=1").decode()


def test_network_attachments_and_virtual_ips() -> None:
    network = pb.Network(
        id="net1",
        spec=pb.NetworkSpec(annotations=pb.Annotations(name="backend"), driver="overlay"),
        allocated=pb.IPAMConfig(subnet="10.0.1.0/24", gateway="10.0.1.1"),
        vni=4097,
    )
    task = pb.Task(id="t1", networks=[pb.NetworkAttachment(network=network, addresses=["10.0.1.5/24"])])
    (attachment,) = dockershapes.task_shape(task)["NetworksAttachments"]
    assert attachment["Addresses"] == ["10.0.1.5/24"]
    assert attachment["Network"]["Spec"]["Name"] == "backend"
    assert attachment["Network"]["IPAMOptions"]["Configs"] == [
        {"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}
    ]
    assert attachment["Network"]["DriverState"]["Options"] == {
        "com.docker.network.driver.overlay.vxlanid_list": "4097"
    }
    service = sample_service()
    service.spec.networks.add(target="net1", aliases=["api"])
    service.endpoint.virtual_ips.add(network_id="net1", addr="10.0.1.2/24")
    shape = dockershapes.service_shape(service)
    assert shape["Spec"]["TaskTemplate"]["Networks"] == [{"Target": "net1", "Aliases": ["api"]}]
    assert shape["Endpoint"]["VirtualIPs"] == [{"NetworkID": "net1", "Addr": "10.0.1.2/24"}]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{.Spec.Name}}", "web"),
        ("{{json .Spec.Mode}}", '{"Replicated":{"Replicas":3}}'),
        ("{{.Spec.Mode.Replicated.Replicas}}", "3"),
        ("{{range .Spec.TaskTemplate.ContainerSpec.Args}}[{{.}}]{{end}}", "[sh][-c][sleep 1000]"),
        ('{{index .Spec.Labels "team"}}', "core"),
        ("{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}};{{end}}", "app=web;team=core;"),
        ('{{if eq .Spec.Name "web"}}yes{{else}}no{{end}}', "yes"),
        ("{{.Spec.Name | upper}}", "WEB"),
        ("{{.Spec.Nothing}}", "<no value>"),
        ("{{.Spec.Labels}}", "map[app:web team:core]"),
        ("{{len .Spec.TaskTemplate.ContainerSpec.Args}}", "3"),
        ("{{with .Spec.Mode.Global}}global{{else}}replicated{{end}}", "replicated"),
        ("a {{- .ID -}} b", "asvc1b"),
        ('{{join .Spec.TaskTemplate.ContainerSpec.Args ","}}', "sh,-c,sleep 1000"),
    ],
)
def test_go_template_subset(template: str, expected: str) -> None:
    assert gotemplate.render(template, dockershapes.service_shape(sample_service())) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.Spec", "unclosed action"),
        ("{{nosuch .Spec}}", 'function "nosuch" not defined'),
        ("{{if .Spec}}x", "unexpected EOF"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{.Nothing.Below}}", "nil pointer evaluating .Nothing.Below"),
    ],
)
def test_go_template_errors_are_one_line(template: str, message: str) -> None:
    with pytest.raises(gotemplate.TemplateError, match=re.escape(message)):
        gotemplate.render(template, dockershapes.service_shape(sample_service()))


def test_pretty_blocks_and_units() -> None:
    assert [go_duration(n) for n in (0, 5 * 10**9, 90 * 10**9, 3600 * 10**9, 500_000_000)] == [
        "0s",
        "5s",
        "1m30s",
        "1h0m0s",
        "500ms",
    ]
    assert bytes_size(2**30) == "1GiB" and bytes_size(2087354368) == "1.944GiB"
    text = service_pretty(dockershapes.service_shape(sample_service()))
    lines = text.splitlines()
    assert lines[:4] == ["", "ID:\t\tsvc1", "Name:\t\tweb", "Labels:"]
    for expected in (
        "Service Mode:\tReplicated",
        " Replicas:\t3",
        " Constraints:\t[node.role==worker]",
        " Delay:\t\t10s",
        " Monitoring Period: 5s",
        " Update order:      start-first",
        " Rollback order:    stop-first",
        " Image:\t\tnginx:1",
        " Args:\t\tsh -c sleep 1000 ",
        "  CPU:\t\t0.5",
        "  Memory:\t1GiB",
        "Endpoint Mode:\tvip",
        " PublishedPort = 8080",
    ):
        assert expected in lines, (expected, text)
    worker = dockershapes.node_shape(pb.Node(id="n1", description=pb.NodeDescription(hostname="w1")))
    node_lines = node_pretty(worker).splitlines()
    assert node_lines[0] == "ID:\t\t\tn1" and "Hostname:              \tw1" in node_lines
    assert " Availability:         \tActive" in node_lines and "Manager Status:" not in node_lines


# ---------------------------------------------------------------------------- real cluster


def _json(node: ShoalNode, *args: str) -> Any:
    return json.loads(node.ok(*args).stdout)


@pytest.mark.cluster
def test_inspect_prints_docker_shapes_on_a_real_cluster(node_factory: Callable[..., ShoalNode]) -> None:
    manager, (worker,) = start_cluster(node_factory, "w1")
    secret_file = manager.state_dir.parent / "secret.txt"
    secret_file.write_text("hunter2")
    manager.ok("secret", "create", "db-pass", str(secret_file))
    manager.ok("config", "create", "app-cfg", str(secret_file))
    manager.ok(
        "service", "create", "--name", "shapes", "--detach", "--replicas", "2", "--env", "A=1",
        "--constraint", "node.role==worker", "--label", "team=core", "--secret", "db-pass",
        TEST_IMAGE, "sleep", "3600",
    )  # fmt: skip
    wait_until(lambda: len(manager.running("shapes")) == 2, 90, what="two tasks running on the worker")

    (service,) = _json(manager, "service", "inspect", "shapes")
    assert isinstance(service["Version"]["Index"], int) and RFC3339_NANO.match(service["CreatedAt"])
    spec = service["Spec"]
    assert spec["Name"] == "shapes" and spec["Labels"] == {"team": "core"}
    assert spec["Mode"] == {"Replicated": {"Replicas": 2}}
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == TEST_IMAGE and container["Args"] == ["sleep", "3600"]
    assert container["Env"] == ["A=1"] and container["Secrets"][0]["SecretName"] == "db-pass"
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==worker"]
    assert service["Endpoint"] == {"Spec": {"Mode": "vip"}}
    formatted = manager.ok("service", "inspect", "--format", "{{.Spec.Name}} {{json .Spec.Mode}}", "shapes")
    assert formatted.stdout == 'shapes {"Replicated":{"Replicas":2}}\n'
    pretty = manager.ok("service", "inspect", "--pretty", "shapes").stdout.splitlines()
    assert "Name:\t\tshapes" in pretty and " Replicas:\t2" in pretty, pretty

    (worker_node,) = _json(manager, "node", "inspect", "w1")
    assert worker_node["Spec"]["Role"] == "worker" and "ManagerStatus" not in worker_node
    assert worker_node["Description"]["Hostname"] == "w1" and worker_node["Status"]["State"] == "ready"
    (manager_node,) = _json(manager, "node", "inspect", "self")
    assert manager_node["Spec"]["Role"] == "manager"
    assert manager_node["ManagerStatus"]["Leader"] is True
    assert manager_node["ManagerStatus"]["Reachability"] == "reachable"
    assert manager.ok("node", "inspect", "-f", "{{.Spec.Role}}", "w1").stdout == "worker\n"
    assert "Manager Status:" in manager.ok("node", "inspect", "--pretty", "self").stdout

    task_id = manager.ok("service", "ps", "-q", "--no-trunc", "shapes").stdout.split()[0]
    (task,) = _json(manager, "inspect", "--type", "task", task_id)
    assert task["ID"] == task_id and task["ServiceID"] == service["ID"]
    assert task["NodeID"] == worker.node_id() and task["Status"]["State"] == "running"
    assert task["DesiredState"] == "running" and task["Slot"] in (1, 2)
    assert task["Spec"]["ContainerSpec"]["Image"] == TEST_IMAGE
    # without --type, as docker inspect: the first kind of object with that reference
    assert manager.ok("inspect", "-f", "{{.Status.State}}", task_id[:12]).stdout == "running\n"
    assert manager.ok("inspect", "-f", "{{.Spec.Name}}", "shapes").stdout == "shapes\n"

    (secret,) = _json(manager, "secret", "inspect", "db-pass")
    assert secret["Spec"]["Name"] == "db-pass" and "Data" not in secret["Spec"]
    assert "hunter2" not in json.dumps(secret)
    (config,) = _json(manager, "config", "inspect", "app-cfg")
    assert base64.b64decode(config["Spec"]["Data"]) == b"hunter2"

    # errors: one line each, and the objects that were found are still printed (as docker)
    missing = manager.cli("service", "inspect", "shapes", "nosuch")
    assert missing.returncode == 1 and json.loads(missing.stdout)[0]["Spec"]["Name"] == "shapes"
    assert missing.stderr == "Error: no such service: nosuch\n"
    bad = manager.cli("service", "inspect", "--format", "{{.Spec", "shapes")
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert "unclosed action" in bad.stderr
    both = manager.cli("service", "inspect", "--pretty", "--format", "{{.ID}}", "shapes")
    assert both.returncode == 2 and "incompatible" in both.stderr
