"""``service logs`` logic: a service's output from every node (issue 17), with fakes for the
runtime and the transport; the real thing is in tests/test_cli_parity.py and
tests/security/test_task_logs_access.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from shoal import rpc
from shoal.daemon.servicelogs import LogItem, LogReader, merge_in_time_order, service_log_items
from shoal.daemon.tasklogs import TaskLogServer
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.runtime import LogLine, RuntimeError_
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode, TLSMaterial
from shoal.store.memory import ObjectStore, Tx
from shoal.testing.objectstore import instant_store

MANAGER = PeerIdentity(node_id="m1", role=rpc.MANAGER_OU, cluster_id="c1")


class FakeRuntime:
    """Each task's lines as (timestamp, text); a task named in ``broken`` cannot be read."""

    def __init__(self, lines: dict[str, list[tuple[float, str]]], broken: set[str] | None = None) -> None:
        self.lines = lines
        self.broken = broken or set()

    async def logs(self, task: pb.Task, *, follow: bool, tail: int | None) -> AsyncIterator[LogLine]:
        if task.id in self.broken:
            raise RuntimeError_(f"no container for task {task.id}")
        lines = self.lines.get(task.id, [])
        for stamp, text in lines[-tail:] if tail else lines:
            yield LogLine(task_id=task.id, text=text, timestamp=stamp)
        if follow:
            await asyncio.Event().wait()


class FakeTransport:
    """Streams TASK_LOGS from the TaskLogServer of the node at each address; records calls."""

    def __init__(self, servers: dict[str, TaskLogServer], down: set[str] | None = None) -> None:
        self.servers = servers
        self.down = down or set()
        self.calls: list[tuple[str, str]] = []

    async def stream(
        self,
        target: str,
        method: str,
        request: bytes,
        *,
        tls: TLSMaterial,
        timeout: float | None = None,  # noqa: ASYNC109 - the transport's signature
        server_name: str = "",
    ) -> AsyncIterator[bytes]:
        self.calls.append((target, server_name))
        if target in self.down:
            raise RPCError(StatusCode.UNAVAILABLE, f"cannot reach {target}: connection refused")
        assert method == rpc.TASK_LOGS
        async for message in self.servers[target].task_logs(request, MANAGER):
            yield message


def task(task_id: str, node_id: str, slot: int, state: int = pb.RUNNING) -> pb.Task:
    return pb.Task(
        id=task_id,
        service_id="s1",
        node_id=node_id,
        slot=slot,
        service_annotations=pb.Annotations(name="web"),
        status=pb.TaskStatus(state=state),  # type: ignore[arg-type]
    )


async def cluster(*tasks: pb.Task, w2_addr: str = "10.0.0.3:2377") -> ObjectStore:
    store = await instant_store()

    def seed(tx: Tx) -> None:
        tx.create(pb.Node(id="m1", role=pb.NodeSpec.MANAGER, description=pb.NodeDescription(hostname="m1")))
        tx.create(pb.Node(id="w1", description=pb.NodeDescription(hostname="w1", addr="10.0.0.2:2377")))
        tx.create(pb.Node(id="w2", description=pb.NodeDescription(hostname="w2", addr=w2_addr)))
        for t in tasks:
            tx.create(t)

    await store.update(seed)
    return store


def reader(store: ObjectStore, runtime: FakeRuntime, transport: FakeTransport) -> LogReader:
    return LogReader(
        node_id="m1",
        runtime=runtime,  # type: ignore[arg-type]
        transport=transport,  # type: ignore[arg-type]
        tls=lambda: TLSMaterial(root_pem=b""),
        store=store,
    )


def server_for(node_id: str, tasks: list[pb.Task], runtime: FakeRuntime) -> TaskLogServer:
    held = {t.id: t for t in tasks}
    return TaskLogServer(node_id, held.get, lambda: runtime)


async def collect(items: AsyncIterator[LogItem]) -> list[LogItem]:
    return [item async for item in items]


async def test_every_nodes_lines_merged_in_time_order() -> None:
    local, remote1, remote2 = task("t1", "m1", 1), task("t2", "w1", 2), task("t3", "w2", 3)
    lines = {"t1": [(1.0, "a"), (4.0, "d")], "t2": [(2.0, "b"), (5.0, "e")], "t3": [(3.0, "c")]}
    runtime = FakeRuntime(lines)
    transport = FakeTransport(
        {
            "10.0.0.2:2377": server_for("w1", [remote1], runtime),
            "10.0.0.3:2377": server_for("w2", [remote2], runtime),
        }
    )
    store = await cluster(local, remote1, remote2)
    items = await collect(service_log_items(reader(store, runtime, transport), "s1", follow=False, tail=None))
    assert [i["Line"] for i in items] == ["a", "b", "c", "d", "e"]
    assert items[1]["Prefix"] == "web.2.t2@w1"
    # Each worker was asked under its own node ID, so only that node's certificate is accepted.
    assert sorted(transport.calls) == [("10.0.0.2:2377", "w1"), ("10.0.0.3:2377", "w2")]
    tail = await collect(service_log_items(reader(store, runtime, transport), "s1", follow=False, tail=1))
    assert [i["Line"] for i in tail] == ["c", "d", "e"]


async def test_an_unreachable_node_is_one_warning_and_the_rest_still_comes() -> None:
    tasks = [task("t1", "m1", 1), task("t2", "w1", 2), task("t4", "w1", 4), task("t3", "w2", 3)]
    runtime = FakeRuntime({"t1": [(1.0, "a")], "t3": [(2.0, "c")]})
    transport = FakeTransport({"10.0.0.3:2377": server_for("w2", tasks, runtime)}, down={"10.0.0.2:2377"})
    store = await cluster(*tasks)
    items = await collect(service_log_items(reader(store, runtime, transport), "s1", follow=False, tail=None))
    warnings = [i["Warning"] for i in items if "Warning" in i]
    assert warnings == ["incomplete log stream: node w1 (w1) is not available: 10.0.0.2:2377: cannot reach "
                        "10.0.0.2:2377: connection refused"]  # fmt: skip
    assert [i["Line"] for i in items if "Line" in i] == ["a", "c"]


async def test_a_down_node_or_one_without_an_address_is_not_dialled() -> None:
    tasks = [task("t2", "w1", 2), task("t3", "w2", 3)]
    store = await cluster(*tasks, w2_addr="")

    def down(tx: Tx) -> None:
        node = tx.node("w1")
        assert node is not None
        changed = pb.Node()
        changed.CopyFrom(node)
        changed.status.state = pb.NodeStatus.DOWN
        tx.update(changed)

    await store.update(down)
    transport = FakeTransport({})
    items = await collect(
        service_log_items(reader(store, FakeRuntime({}), transport), "s1", follow=False, tail=None)
    )
    assert transport.calls == []
    assert sorted(i["Warning"].split(" is not available: ")[1] for i in items) == [
        "the node has not said where it serves task logs (it has no session yet, or runs an older shoal)",
        "the node is down",
    ]


async def test_read_errors_and_tasks_gone_from_the_node() -> None:
    tasks = [task("t1", "m1", 1), task("t2", "w1", 2), task("t5", "w1", 5)]
    runtime = FakeRuntime({}, broken={"t1", "t2"})
    # w1 no longer holds t5 (its container went with it): nothing, no warning.
    transport = FakeTransport({"10.0.0.2:2377": server_for("w1", tasks[1:2], runtime)})
    store = await cluster(*tasks)
    items = await collect(service_log_items(reader(store, runtime, transport), "s1", follow=False, tail=None))
    assert sorted((i["Prefix"], i["Line"], i["Stream"]) for i in items) == [
        ("web.1.t1@m1", "error reading logs: no container for task t1", "stderr"),
        ("web.2.t2@w1", "error reading logs: no container for task t2", "stderr"),
    ]


async def test_follow_picks_up_tasks_that_start_later() -> None:
    first = task("t1", "m1", 1)
    runtime = FakeRuntime({"t1": [(1.0, "first")], "t2": [(2.0, "from the new task")]})
    transport = FakeTransport({"10.0.0.2:2377": server_for("w1", [task("t2", "w1", 2)], runtime)})
    store = await cluster(first)
    items = service_log_items(reader(store, runtime, transport), "s1", follow=True, tail=None)
    try:
        assert (await asyncio.wait_for(anext(items), 5))["Line"] == "first"
        await store.update(lambda tx: tx.create(task("t2", "w1", 2, state=pb.ASSIGNED)))
        await store.update(lambda tx: tx.update(task("t2", "w1", 2, state=pb.RUNNING)))
        assert (await asyncio.wait_for(anext(items), 5))["Line"] == "from the new task"
    finally:
        await items.aclose()  # type: ignore[attr-defined]


async def test_merge_holds_one_line_per_source() -> None:
    pulled: list[str] = []

    async def source(name: str, stamps: list[float]) -> AsyncIterator[LogItem]:
        for stamp in stamps:
            pulled.append(f"{name}{stamp:g}")
            yield {"Line": f"{name}{stamp:g}", "Timestamp": stamp}

    merged = merge_in_time_order([source("a", [1, 3]), source("b", [2, 4])])
    assert (await anext(merged))["Line"] == "a1"
    assert pulled == ["a1", "b2"]  # one head per source, nothing read ahead
    assert [i["Line"] async for i in merged] == ["b2", "a3", "b4"]


def test_a_worker_checks_the_certificate_and_the_managers_its_leader_named() -> None:
    current: list[frozenset[str] | None] = [frozenset({MANAGER.node_id})]
    check = rpc.certificate_checker("c1", lambda: current[0])
    check(rpc.TASK_LOGS, MANAGER)
    demoted = PeerIdentity(node_id="m2", role=rpc.MANAGER_OU, cluster_id="c1")
    refusals: list[tuple[Any, str]] = [
        (PeerIdentity(node_id="w1", role=rpc.WORKER_OU, cluster_id="c1"), "needs swarm-manager"),
        (PeerIdentity(node_id="m9", role=rpc.MANAGER_OU, cluster_id="other"), "belongs to cluster 'other'"),
        (None, "certificate is required"),
        # An old manager certificate of a node the leader no longer names (demoted or removed).
        (demoted, "not a manager of this swarm now"),
    ]
    for peer, reason in refusals:
        with pytest.raises(RPCError, match=reason) as refused:
            check(rpc.TASK_LOGS, peer)
        assert refused.value.code == StatusCode.PERMISSION_DENIED
    current[0] = None  # not told by a leader yet: manager-only calls are refused
    with pytest.raises(RPCError, match="not yet heard from a leader"):
        check(rpc.TASK_LOGS, MANAGER)


async def test_task_log_server_serves_only_its_tasks() -> None:
    held = task("t2", "w1", 2)
    server = server_for("w1", [held], FakeRuntime({"t2": [(1.0, "x"), (2.0, "y")]}))
    request = rpb.TaskLogsRequest(task_id="t2", tail=1).SerializeToString()
    lines = [rpb.TaskLogLine.FromString(m) async for m in server.task_logs(request, MANAGER)]
    assert [(line.text, line.timestamp) for line in lines] == [("y", 2.0)]
    with pytest.raises(RPCError) as missing:
        await anext(server.task_logs(rpb.TaskLogsRequest(task_id="t9").SerializeToString(), MANAGER))
    assert missing.value.code == StatusCode.NOT_FOUND
    unary, streams = server.handlers(rpc.certificate_checker("c1", lambda: frozenset({MANAGER.node_id})))
    assert unary == {} and set(streams) == {rpc.TASK_LOGS}
    worker = PeerIdentity(node_id="w2", role=rpc.WORKER_OU, cluster_id="c1")
    with pytest.raises(RPCError) as refused:
        await anext(streams[rpc.TASK_LOGS](request, worker))
    assert refused.value.code == StatusCode.PERMISSION_DENIED


async def test_since_leaves_out_older_lines_where_they_are_read() -> None:
    local, remote = task("t1", "m1", 1), task("t2", "w1", 2)
    lines = {"t1": [(1.0, "a"), (4.0, "d")], "t2": [(2.0, "b"), (5.0, "e")]}
    runtime = FakeRuntime(lines)
    server = server_for("w1", [remote], runtime)
    transport = FakeTransport({"10.0.0.2:2377": server})
    store = await cluster(local, remote)
    logs = reader(store, runtime, transport)
    items = await collect(service_log_items(logs, "s1", follow=False, tail=None, since=3.0))
    assert [i["Line"] for i in items] == ["d", "e"]
    # The worker itself drops the older lines: they never cross the network.
    request = rpb.TaskLogsRequest(task_id="t2", tail=-1, since=2.5).SerializeToString()
    sent = [rpb.TaskLogLine.FromString(m).text async for m in server.task_logs(request, MANAGER)]
    assert sent == ["e"]


async def test_each_line_carries_the_ids_the_cli_prints() -> None:
    remote = task("t2" + "x" * 20, "w1", 2)
    runtime = FakeRuntime({remote.id: [(2.0, "b")]})
    transport = FakeTransport({"10.0.0.2:2377": server_for("w1", [remote], runtime)})
    store = await cluster(remote)
    (item,) = await collect(
        service_log_items(reader(store, runtime, transport), "s1", follow=False, tail=None)
    )
    assert {k: item[k] for k in ("ServiceName", "ServiceID", "Slot", "TaskID", "NodeID", "NodeName")} == {
        "ServiceName": "web",
        "ServiceID": "s1",
        "Slot": "2",
        "TaskID": remote.id,
        "NodeID": "w1",
        "NodeName": "w1",
    }
