"""shoal.placement: constraint parsing and matching, preferences, the filter pipeline, node infos."""

from __future__ import annotations

import pytest
from shoal import placement
from shoal.placement import (
    Filter,
    Pipeline,
    build_node_infos,
    group_batches,
    parse_constraint,
    parse_preference,
)
from shoal.proto import objects_pb2 as pb
from shoal.roles import NodeInfo
from shoal.testing.scheduler import GIB, make_node, make_task, make_tasks, node_infos

# --------------------------------------------------------------------------- constraints


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("node.id==n1", True),
        ("node.id==N1", True),
        ("node.id!=n1", False),
        ("node.hostname==Web-1", True),
        ("node.role==manager", True),
        ("node.role==worker", False),
        ("node.role != worker", True),
        ("node.platform.os==Linux", True),
        ("node.platform.arch==x86_64", True),
        ("node.platform.arch==arm64", False),
        ("node.labels.zone==eu-west", True),
        ("node.labels.zone==EU-WEST", True),
        ("node.labels.zone!=eu-west", False),
        ("node.labels.missing!=x", True),
        ("node.labels.missing==x", False),
        ("engine.labels.disk==ssd", True),
        ("engine.labels.disk!=ssd", False),
        ("NODE.LABELS.zone==eu-west", True),
        ("node.labels.Zone==eu-west", False),  # label names are case-sensitive, like Swarm's
        ("node.ip==10.0.1.7", True),
        ("node.ip==10.0.0.0/16", True),
        ("node.ip!=10.1.0.0/16", True),
        ("node.ip==10.0.1.8", False),
    ],
)
def test_constraint_matches(expr: str, expected: bool) -> None:
    node = make_node(
        "n1",
        hostname="web-1",
        role=pb.NodeSpec.MANAGER,
        labels={"zone": "eu-west"},
        engine_labels={"disk": "ssd"},
        addr="10.0.1.7",
    )
    assert parse_constraint(expr).matches(node) is expected


def test_constraint_keeps_its_text() -> None:
    constraint = parse_constraint(" node.labels.zone == eu ")
    assert (constraint.key, constraint.operator, constraint.value) == ("node.labels.zone", "==", "eu")
    assert str(constraint) == "node.labels.zone==eu"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "node.rol==x",
            'invalid constraint "node.rol==x": unknown key "node.rol" (use node.id, node.hostname, node.ip, '
            "node.role, node.platform.os, node.platform.arch, node.labels.<key>, engine.labels.<key>)",
        ),
        ("node.labels.zone", 'invalid constraint "node.labels.zone": expected one operator from ==, !='),
        (
            "node.labels.zone>eu",
            'invalid constraint "node.labels.zone>eu": expected one operator from ==, !=',
        ),
        ("node.labels.==eu", 'invalid constraint "node.labels.==eu": key "node.labels." names no label'),
        ("==eu", 'invalid constraint "==eu": key "" is invalid'),
        ("node.labels.zone==", 'invalid constraint "node.labels.zone==": value "" is invalid'),
        ("node.labels.zone==a<b", 'invalid constraint "node.labels.zone==a<b": value "a<b" is invalid'),
        ("node.role==boss", 'invalid constraint "node.role==boss": node.role must be manager or worker'),
        ("node.ip==10.0.0.300", 'invalid constraint "node.ip==10.0.0.300": node.ip needs an IP address'),
    ],
)
def test_constraint_errors_name_the_problem(expr: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_constraint(expr)
    text = str(info.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_parse_preference() -> None:
    node = make_node("n1", labels={"zone": "a"}, engine_labels={"rack": "r1"})
    assert parse_preference("spread=node.labels.zone").value(node) == "a"
    assert parse_preference("spread=engine.labels.rack").value(node) == "r1"
    assert parse_preference("spread=node.labels.other").value(node) == ""
    assert str(parse_preference("spread=node.labels.zone")) == "spread=node.labels.zone"
    for bad in ("binpack=node.labels.zone", "spread=node.hostname", "spread=node.labels.", "zone"):
        with pytest.raises(ValueError, match=f'invalid placement preference "{bad}"'):
            parse_preference(bad)


# --------------------------------------------------------------------------- pipeline


def _process_all(pipeline: Pipeline, infos: list[NodeInfo]) -> list[str]:
    return [info.id for info in infos if pipeline.process(info)]


def test_pipeline_filters_in_swarm_order_and_explains() -> None:
    occupant = make_task("t0", service_id="web", node_id="full", state=pb.RUNNING, memory_bytes=GIB)
    nodes = [
        make_node("ok", labels={"zone": "eu"}),
        make_node("drained", availability=pb.NodeSpec.DRAIN, labels={"zone": "eu"}),
        make_node("down", state=pb.NodeStatus.DOWN, memory_bytes=0),  # ready fails first
        make_node("tiny", memory_bytes=GIB // 2, labels={"zone": "eu"}),
        make_node("us", labels={"zone": "us"}),
        make_node("nolabel"),
        make_node("full", memory_bytes=2 * GIB, labels={"zone": "eu"}),
    ]
    infos = node_infos(nodes, [occupant])
    task = make_task("t1", service_id="web", memory_bytes=GIB + 1, constraints=["node.labels.zone==eu"])
    pipeline = Pipeline(()).set_task(task)
    assert _process_all(pipeline, infos) == ["ok"]
    assert pipeline.failures() == {"ReadyFilter": 2, "ResourceFilter": 2, "ConstraintFilter": 2}
    # Equal counts keep filter order.
    assert pipeline.explain() == (
        "2 nodes not available for new tasks; insufficient resources on 2 nodes; "
        "scheduling constraints not satisfied on 2 nodes"
    )


def test_explain_sorts_by_count_and_uses_singular() -> None:
    nodes = [make_node("a"), make_node("b", labels={"zone": "eu"}), make_node("c", state=pb.NodeStatus.DOWN)]
    pipeline = Pipeline(()).set_task(make_task("t", constraints=["node.labels.zone==eu"]))
    _process_all(pipeline, node_infos([*nodes, make_node("d")]))
    assert pipeline.explain() == (
        "scheduling constraints not satisfied on 2 nodes; 1 node not available for new tasks"
    )
    pipeline.set_task(make_task("t"))
    assert pipeline.explain() == "", "set_task resets the counts"


def test_host_port_and_max_replicas_filters() -> None:
    existing = [
        make_task("a", service_id="web", node_id="n0", state=pb.RUNNING, host_ports=[80]),
        make_task("b", service_id="web", node_id="n1", state=pb.RUNNING),
        make_task("c", service_id="web", node_id="n1", state=pb.ASSIGNED),
    ]
    infos = node_infos([make_node("n0"), make_node("n1"), make_node("n2")], existing)
    pipeline = Pipeline(()).set_task(make_task("t", service_id="web", host_ports=[80], max_replicas=2))
    assert _process_all(pipeline, infos) == ["n2"]
    assert pipeline.explain() == "host-mode port already in use on 1 node; max replicas per node limit exceed"
    # The same port over UDP does not clash with TCP.
    udp = make_task("u", service_id="web")
    udp.endpoint.ports.add(protocol=pb.PortConfig.UDP, published_port=80, publish_mode=pb.PortConfig.HOST)
    assert Pipeline(()).set_task(udp).process(infos[0])
    # Ingress ports never block a node.
    ingress = make_task("i", service_id="web")
    ingress.endpoint.ports.add(published_port=80, publish_mode=pb.PortConfig.INGRESS)
    assert Pipeline(()).set_task(ingress).process(infos[0])


def test_recheck_sees_shrinking_resources_only() -> None:
    (info,) = node_infos([make_node("n", memory_bytes=2 * GIB)])
    task = make_task("t", memory_bytes=GIB)
    pipeline = Pipeline(()).set_task(task)
    assert pipeline.process(info)
    info.add_task(task)
    assert pipeline.recheck(info)
    info.add_task(task)
    assert not pipeline.recheck(info)
    assert pipeline.explain() == "", "recheck does not count failures"


def test_invalid_constraint_in_a_stored_spec_matches_nothing() -> None:
    pipeline = Pipeline(()).set_task(make_task("t", constraints=["node.bogus==1"]))
    assert not pipeline.process(node_infos([make_node("n")])[0])
    assert pipeline.explain() == "scheduling constraints not satisfied on 1 node"


class _OnlyNode(Filter):
    static = True

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.seen: list[str] = []

    def set_task(self, task: pb.Task) -> bool:
        self.seen.append(task.id)
        return True

    def check(self, info: NodeInfo) -> bool:
        return info.id == self.node_id

    def explain(self, nodes: int) -> str:
        return f"not the chosen one on {nodes} nodes"


def test_extra_filters_run_after_builtins() -> None:
    only = _OnlyNode("b")
    infos = node_infos([make_node("a"), make_node("b"), make_node("c", availability=pb.NodeSpec.DRAIN)])
    pipeline = Pipeline([only]).set_task(make_task("t"))
    assert _process_all(pipeline, infos) == ["b"]
    assert only.seen == ["t"]
    assert pipeline.explain() == "1 node not available for new tasks; not the chosen one on 1 nodes"


def test_check_filters_refuses_what_is_not_a_filter() -> None:
    only = _OnlyNode("a")
    assert placement.check_filters([only]) == (only,)
    with pytest.raises(TypeError, match=r"is not a shoal\.placement\.Filter"):
        placement.check_filters([only, object()])


def test_pipeline_has_no_hidden_extension_filters() -> None:
    """Extension filters reach a scheduler only through ``schedule(..., filters)``."""
    assert not hasattr(placement, "set_extension_filters")
    infos = node_infos([make_node("a"), make_node("b")])
    assert _process_all(Pipeline().set_task(make_task("t")), infos) == ["a", "b"]


# --------------------------------------------------------------------------- node infos


def test_build_node_infos_counts_occupying_tasks() -> None:
    nodes = [make_node("n0", nano_cpus=4 * 10**9, memory_bytes=8 * GIB), make_node("n1")]
    tasks = [
        make_task("run", service_id="a", node_id="n0", state=pb.RUNNING, memory_bytes=GIB, host_ports=[81]),
        make_task("assigned", service_id="a", node_id="n0", state=pb.ASSIGNED, nano_cpus=10**9),
        make_task("other", service_id="b", node_id="n0", state=pb.STARTING),
        make_task("failed", service_id="a", node_id="n0", state=pb.FAILED, memory_bytes=GIB),
        make_task("stopping", service_id="a", node_id="n0", state=pb.RUNNING, desired_state=pb.SHUTDOWN),
        make_task("pending", service_id="a", state=pb.PENDING),
        make_task("ghost", service_id="a", node_id="gone", state=pb.RUNNING),
    ]
    infos = build_node_infos(nodes, tasks)
    assert list(infos) == ["n0", "n1"]
    n0 = infos["n0"]
    assert n0.tasks_by_service == {"a": 2, "b": 1}
    assert n0.total_tasks == 3
    assert n0.available_memory_bytes == 7 * GIB
    assert n0.available_nano_cpus == 3 * 10**9
    assert n0.used_host_ports == {(pb.PortConfig.TCP, 81)}
    assert infos["n1"].total_tasks == 0
    assert infos["n1"].available_memory_bytes == 8 * GIB


def test_group_batches_by_service_and_spec_version() -> None:
    a1 = make_tasks(2, prefix="a1", service_id="a", spec_version=1)
    a2 = make_tasks(1, prefix="a2", service_id="a", spec_version=2)
    b1 = make_tasks(1, prefix="b1", service_id="b", spec_version=1)
    # Without a spec version only identical specs share a batch.
    x = make_tasks(2, prefix="x", service_id="c", spec_version=0)
    y = make_tasks(1, prefix="y", service_id="c", spec_version=0, memory_bytes=GIB)
    batches = group_batches([a1[0], a2[0], b1[0], a1[1], x[0], y[0], x[1]])
    assert [[t.id for t in batch] for batch in batches] == [
        ["a1-1", "a1-2"],
        ["a2-1"],
        ["b1-1"],
        ["x-1", "x-2"],
        ["y-1"],
    ]
