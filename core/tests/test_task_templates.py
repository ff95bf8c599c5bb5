"""Service templates (issue 17, item 2): checked on the manager, expanded per task on the node.

``--hostname``, ``--env`` and ``--mount`` source and target may name the task that runs them
(``{{.Task.Slot}}``, ``{{.Node.Hostname}}``...); an unknown placeholder or a malformed template
is one SpecError line at create or update time, so nothing that cannot expand is ever stored.
"""

from __future__ import annotations

import pytest
from shoal import specs, tasktemplates
from shoal.proto import objects_pb2 as pb


def _task(slot: int = 2, node_id: str = "node1") -> pb.Task:
    task = pb.Task(id="task1", service_id="svc1", slot=slot, node_id=node_id)
    task.service_annotations.name = "web"
    task.service_annotations.labels["tier"] = "front"
    container = task.spec.container
    container.hostname = "{{.Node.Hostname}}-{{.Task.Slot}}"
    container.env.extend(["SLOT={{ .Task.Slot }}", 'TIER={{index .Service.Labels "tier"}}', "PLAIN=1"])
    container.mounts.add(type=pb.Mount.BIND, source="/data/{{.Service.Name}}/{{.Task.Slot}}", target="/d")
    return task


NODE = pb.NodeDescription(hostname="worker7", platform=pb.Platform(os="linux", arch="x86_64"))


def test_a_task_is_expanded_for_the_node_that_runs_it() -> None:
    task = _task()
    expanded = tasktemplates.expand_task(task, tasktemplates.values_for(task, "node1", NODE))
    container = expanded.spec.container
    assert container.hostname == "worker7-2"
    assert list(container.env) == ["SLOT=2", "TIER=front", "PLAIN=1"]
    assert container.mounts[0].source == "/data/web/2"
    assert task.spec.container.hostname == "{{.Node.Hostname}}-{{.Task.Slot}}"  # the original stays


def test_every_documented_placeholder_has_its_swarm_value() -> None:
    task = _task()
    values = tasktemplates.values_for(task, "node1", NODE)
    text = " ".join("{{." + p + "}}" for p in tasktemplates.PLACEHOLDERS)
    assert tasktemplates.expand(text, values) == (
        "svc1 web map[tier:front] node1 worker7 x86_64 linux task1 web.2.task1 2"
    )


def test_a_global_task_uses_the_node_id_for_its_slot() -> None:
    task = _task(slot=0, node_id="node9")
    values = tasktemplates.values_for(task, "node9", NODE)
    assert (values.task_slot, values.task_name) == ("node9", "web.node9.task1")


def test_a_task_without_templates_is_passed_as_is() -> None:
    task = pb.Task(id="t")
    task.spec.container.hostname = "plain"
    assert tasktemplates.expand_task(task, tasktemplates.SAMPLE) is task


def test_templates_are_stored_as_typed() -> None:
    spec = specs.service_spec(
        {
            "name": "web",
            "image": "searchsvc:v1.0",
            "hostname": "{{.Node.Hostname}}-{{.Task.Slot}}",
            "env": ["NODE={{.Node.ID}}"],
            "mounts": ["type=volume,source=data-{{.Task.Slot}},target=/srv/{{.Service.Name}}"],
        }
    )
    container = spec.task.container
    assert container.hostname == "{{.Node.Hostname}}-{{.Task.Slot}}"
    assert list(container.env) == ["NODE={{.Node.ID}}"]
    assert (container.mounts[0].source, container.mounts[0].target) == (
        "data-{{.Task.Slot}}",
        "/srv/{{.Service.Name}}",
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"hostname": "{{.Node.Name}}"},
            'invalid --hostname "{{.Node.Name}}": unknown placeholder "{{.Node.Name}}"',
        ),
        ({"hostname": "{{.Task.Slot"}, 'is not closed by "}}"'),
        ({"hostname": "{{.Task.Slot | printf}}"}, "unsupported template"),
        ({"hostname": "{{.Service.Name}}_x"}, "--hostname"),  # expands to an invalid hostname
        ({"env": ["A={{.Task.Number}}"]}, 'invalid --env "A={{.Task.Number}}": unknown placeholder'),
        ({"mounts": ["type=bind,source={{.Task.Slot}},target=/d"]}, "absolute source path"),
        ({"mounts": ["type=bind,source=/x,target=/d/{{.Nope}}"]}, "unknown placeholder"),
    ],
)
def test_bad_templates_are_refused_with_one_line(params: dict[str, object], expected: str) -> None:
    with pytest.raises(specs.SpecError) as refused:
        specs.service_spec({"name": "web", "image": "searchsvc:v1.0", **params})
    message = str(refused.value)
    assert expected in message and "\n" not in message
    if "unknown placeholder" in expected:
        assert "{{.Task.Slot}}" in message  # names what is valid


def test_update_refuses_a_bad_template_too() -> None:
    current = specs.service_spec({"name": "web", "image": "searchsvc:v1.0"})
    with pytest.raises(specs.SpecError, match="unknown placeholder"):
        specs.updated_spec(current, {"env_add": ["X={{.Service.Nme}}"]})
