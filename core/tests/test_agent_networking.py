"""The agent's network glue (agent/networking.py and its hooks in the task controller), with a
recording network provider and a fake engine: fast, in-process logic tests. The real data path
and real daemons are in tests/test_networking_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import ClassVar

import pytest
from shoal import states
from shoal.agent.controller import TaskController
from shoal.agent.networking import NodeNetworking
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.network import (
    FEATURES,
    Backend,
    EndpointAttachment,
    NetworkError,
    NetworkSpec,
    NodeNetwork,
    PublishedPort,
    ServiceRecord,
)
from shoal.roles.runtime import ContainerRef, ExitStatus, RuntimeError_, TaskFile
from shoal.testing.runtime import make_task

NODE = "glue-node"
DEADLINE = 5.0


class RecordingNetwork:
    """A network provider that records every call (in order) and fails attach on request."""

    role: ClassVar[str] = "network"
    api_version: ClassVar[int] = 1
    features: ClassVar[frozenset[str]] = FEATURES

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.networks: dict[str, NetworkSpec] = {}
        self.endpoints: dict[tuple[str, str], EndpointAttachment] = {}
        self.published: dict[tuple[str, int], list[str]] = {}
        self.records: dict[str, list[ServiceRecord]] = {}
        self.fail_attach = ""

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    async def start(self, node: NodeNetwork) -> None:
        self.calls.append(("start", node))

    async def set_peers(self, peer_ips: Sequence[str]) -> None:
        self.calls.append(("set_peers", list(peer_ips)))

    async def create_network(self, network: NetworkSpec) -> None:
        self.calls.append(("create_network", network))
        self.networks[network.network_id] = network

    async def remove_network(self, network_id: str) -> None:
        self.calls.append(("remove_network", network_id))
        self.networks.pop(network_id, None)

    async def attach(self, attachment: EndpointAttachment) -> None:
        self.calls.append(("attach", attachment))
        if self.fail_attach:
            raise NetworkError(self.fail_attach)
        assert attachment.network_id in self.networks, "attach before create_network"
        self.endpoints[(attachment.task_id, attachment.network_id)] = attachment

    async def detach(self, task_id: str, network_id: str) -> None:
        self.calls.append(("detach", (task_id, network_id)))
        self.endpoints.pop((task_id, network_id), None)

    async def publish(self, port: PublishedPort, backends: Sequence[Backend]) -> None:
        self.calls.append(("publish", (port, [b.address for b in backends])))
        self.published[(port.protocol, port.published)] = [b.address for b in backends]

    async def unpublish(self, protocol: str, published: int) -> None:
        self.calls.append(("unpublish", (protocol, published)))
        self.published.pop((protocol, published), None)

    async def set_records(self, network_id: str, records: Sequence[ServiceRecord]) -> None:
        self.calls.append(("set_records", (network_id, list(records))))
        self.records[network_id] = list(records)

    async def resolve(self, network_id: str, name: str) -> list[str]:
        return []

    async def cleanup(self) -> None:
        self.calls.append(("cleanup", None))

    async def close(self) -> None:
        self.calls.append(("close", None))


class FakeEngine:
    """Just enough of a runtime: containers start with a PID and exit when told to."""

    role: ClassVar[str] = "runtime"
    api_version: ClassVar[int] = 2

    def __init__(self) -> None:
        self.exits: dict[str, asyncio.Future[ExitStatus]] = {}
        self.pids: dict[str, int] = {}
        self.waiting: set[str] = set()

    async def prepare(self, task: pb.Task, files: Sequence[TaskFile] = (), **_: object) -> None:
        self.exits[task.id] = asyncio.get_running_loop().create_future()

    async def start(self, task: pb.Task) -> ContainerRef:
        self.pids[task.id] = 1000 + len(self.pids)
        return ContainerRef(
            task.id, f"c-{task.id}", task.service_id, task.node_id, True, pid=self.pids[task.id]
        )

    async def wait(self, task: pb.Task) -> ExitStatus:
        self.waiting.add(task.id)
        return await self.exits[task.id]

    def exit(self, task: pb.Task, code: int) -> None:
        self.exits[task.id].set_result(ExitStatus(exit_code=code))

    async def shutdown(self, task: pb.Task, grace: float) -> None:
        future = self.exits.get(task.id)
        if future is not None and not future.done():
            future.set_result(ExitStatus(exit_code=137))

    async def remove(self, task: pb.Task) -> None:
        self.exits.pop(task.id, None)

    async def find(self, task: pb.Task) -> ContainerRef | None:
        raise RuntimeError_("not used")


def network(network_id: str, name: str, subnet: str, vni: int, *, ingress: bool = False) -> pb.Network:
    net = pb.Network(id=network_id, vni=vni)
    net.spec.annotations.name = name
    net.spec.driver = "overlay"
    net.spec.ingress = ingress
    net.allocated.subnet = subnet
    net.allocated.gateway = subnet.rsplit(".", 1)[0] + ".1"
    return net


INGRESS = network("ingressid", "ingress", "10.0.0.0/24", 4096, ingress=True)
BACKEND = network("backendid", "backend", "10.0.1.0/24", 4097)


def attachment(net: pb.Network, address: str, *aliases: str) -> pb.NetworkAttachment:
    return pb.NetworkAttachment(network=net, addresses=[address], aliases=list(aliases))


def task_on(*attachments: pb.NetworkAttachment, name: str = "api") -> pb.Task:
    task = make_task("img", node_id=NODE, service_name=name)
    task.networks.extend(attachments)
    return task


def state(
    *, peers: Sequence[str] = (), backends: Sequence[str] = (), records: bool = False
) -> rpb.NetworkState:
    message = rpb.NetworkState(peer_ips=list(peers))
    message.ingress.CopyFrom(attachment(INGRESS, "10.0.0.2/24"))
    message.ingress_ports.add(
        service_id="svc", protocol="tcp", published=8080, target=80, backends=list(backends)
    )
    if records:
        entry = message.records.add(network_id=BACKEND.id)
        entry.records.add(name="api", vip="10.0.1.2", task_addresses=["10.0.1.5", "10.0.1.6"])
    return message


async def eventually(check: Callable[[], object], what: str) -> None:
    """Wait (bounded) until ``check()`` holds; the glue runs on this loop, so polling it
    between turns of the loop is the condition wait here."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Reports:
    def __init__(self) -> None:
        self.statuses: list[pb.TaskStatus] = []

    def __call__(self, task: pb.Task, status: pb.TaskStatus) -> None:
        self.statuses.append(status)

    def states(self) -> list[int]:
        return [s.state for s in self.statuses]

    def last(self) -> pb.TaskStatus:
        return self.statuses[-1]


@pytest.fixture
def provider() -> RecordingNetwork:
    return RecordingNetwork()


# ---------------------------------------------------------------------- session state


@pytest.mark.asyncio
async def test_state_sets_peers_creates_ingress_with_the_node_address_and_publishes(
    provider: RecordingNetwork,
) -> None:
    glue = NodeNetworking(provider)
    glue.submit(state(peers=["198.18.0.12", "198.18.0.11"], backends=["10.0.0.5", "10.0.0.6"]))
    await glue.apply()
    assert provider.names() == ["set_peers", "create_network", "publish"]
    assert provider.calls[0][1] == ["198.18.0.11", "198.18.0.12"]
    created = provider.networks[INGRESS.id]
    assert created.ingress and created.host_address == "10.0.0.2/24" and created.subnet == "10.0.0.0/24"
    assert created.vni == 4096 and created.name == "ingress"
    port, backends = provider.calls[2][1]  # type: ignore[misc]
    assert port == PublishedPort("svc", "tcp", 8080, 80)
    assert backends == ["10.0.0.5", "10.0.0.6"]

    # The same state again: nothing to tell the provider.
    glue.submit(state(peers=["198.18.0.11", "198.18.0.12"], backends=["10.0.0.6", "10.0.0.5"]))
    await glue.apply()
    assert len(provider.calls) == 3


@pytest.mark.asyncio
async def test_backend_change_republishes_and_a_removed_port_is_unpublished(
    provider: RecordingNetwork,
) -> None:
    glue = NodeNetworking(provider)
    glue.submit(state(backends=["10.0.0.5"]))
    await glue.apply()
    glue.submit(state(backends=["10.0.0.5", "10.0.0.7"]))
    await glue.apply()
    assert provider.published[("tcp", 8080)] == ["10.0.0.5", "10.0.0.7"]
    without_port = state()
    del without_port.ingress_ports[:]
    glue.submit(without_port)
    await glue.apply()
    assert ("unpublish", ("tcp", 8080)) in provider.calls
    assert not provider.published


@pytest.mark.asyncio
async def test_ingress_network_goes_when_the_state_drops_it(provider: RecordingNetwork) -> None:
    glue = NodeNetworking(provider)
    glue.submit(state())
    await glue.apply()
    glue.submit(rpb.NetworkState())
    await glue.apply()
    assert ("remove_network", INGRESS.id) in provider.calls
    assert not provider.networks


@pytest.mark.asyncio
async def test_no_ingress_port_no_ingress_network_and_the_last_port_takes_it_away(
    provider: RecordingNetwork,
) -> None:
    """A swarm that publishes nothing leaves no device on its nodes; the network is made
    before the first port is published and removed after the last one is unpublished."""
    glue = NodeNetworking(provider)
    without_ports = state()
    del without_ports.ingress_ports[:]
    glue.submit(without_ports)
    await glue.apply()
    assert "create_network" not in provider.names()
    glue.submit(state(backends=["10.0.0.5"]))
    await glue.apply()
    assert provider.names()[-2:] == ["create_network", "publish"]
    glue.submit(without_ports)
    await glue.apply()
    assert provider.names()[-2:] == ["unpublish", "remove_network"]
    assert not provider.networks


@pytest.mark.asyncio
async def test_records_wait_for_the_network_to_exist_on_the_node(provider: RecordingNetwork) -> None:
    glue = NodeNetworking(provider)
    glue.start()
    try:
        glue.submit(state(records=True))
        await eventually(lambda: "publish" in provider.names(), "state applied")
        assert "set_records" not in provider.names()  # no task of backend here yet
        await glue.attach(task_on(attachment(BACKEND, "10.0.1.5/24", "api")), pid=42)
        await eventually(lambda: BACKEND.id in provider.records, "records after attach")
        assert [r.name for r in provider.records[BACKEND.id]] == ["api"]
        assert provider.records[BACKEND.id][0].task_addresses == ("10.0.1.5", "10.0.1.6")
    finally:
        await glue.close()


@pytest.mark.asyncio
async def test_a_provider_failure_is_retried_by_the_loop(provider: RecordingNetwork) -> None:
    failing = {"left": 1}
    real_publish = provider.publish

    async def flaky(port: PublishedPort, backends: Sequence[Backend]) -> None:
        if failing["left"]:
            failing["left"] -= 1
            raise NetworkError("nft: busy", temporary=True)
        await real_publish(port, backends)

    provider.publish = flaky  # type: ignore[method-assign]
    glue = NodeNetworking(provider)
    glue.start()
    try:
        glue.submit(state(backends=["10.0.0.5"]))
        await eventually(lambda: ("tcp", 8080) in provider.published, "publish retried")
    finally:
        await glue.close()


# ---------------------------------------------------------------------- tasks


async def run_controller(
    task: pb.Task, glue: NodeNetworking, engine: FakeEngine, status: pb.TaskStatus | None = None
) -> tuple[TaskController, Reports]:
    reports = Reports()
    controller = TaskController(task, status, engine, reports, networks=glue)  # type: ignore[arg-type]
    controller.start()
    return controller, reports


@pytest.mark.asyncio
async def test_task_endpoints_are_attached_before_running_and_released_at_removal(
    provider: RecordingNetwork,
) -> None:
    glue, engine = NodeNetworking(provider), FakeEngine()
    first = task_on(attachment(BACKEND, "10.0.1.5/24", "api", "db"), attachment(INGRESS, "10.0.0.5/24"))
    second = task_on(attachment(BACKEND, "10.0.1.6/24", "api"))
    one, reports_one = await run_controller(first, glue, engine)
    two, reports_two = await run_controller(second, glue, engine)
    await eventually(lambda: states.RUNNING in reports_one.states(), "first RUNNING")
    await eventually(lambda: states.RUNNING in reports_two.states(), "second RUNNING")

    endpoint = provider.endpoints[(first.id, BACKEND.id)]
    assert endpoint.sandbox == f"/proc/{engine.pids[first.id]}/ns/net"
    assert endpoint.address == "10.0.1.5/24" and endpoint.aliases == ("api", "db")
    assert (first.id, INGRESS.id) in provider.endpoints
    creates = [c for c in provider.calls if c[0] == "create_network"]
    assert sorted(spec.network_id for _, spec in creates) == [BACKEND.id, INGRESS.id]  # type: ignore[attr-defined]

    await one.remove()
    assert (first.id, BACKEND.id) not in provider.endpoints
    assert BACKEND.id in provider.networks  # the second task still uses it
    assert INGRESS.id not in provider.networks  # nobody here uses it any more
    await two.remove()
    assert not provider.networks and not provider.endpoints


@pytest.mark.asyncio
async def test_a_task_is_reported_running_only_after_its_attach(provider: RecordingNetwork) -> None:
    glue, engine = NodeNetworking(provider), FakeEngine()
    attached_when_running: list[bool] = []
    task = task_on(attachment(BACKEND, "10.0.1.5/24", "api"))

    def report(t: pb.Task, status: pb.TaskStatus) -> None:
        if status.state == states.RUNNING:
            attached_when_running.append((task.id, BACKEND.id) in provider.endpoints)

    controller = TaskController(task, None, engine, report, networks=glue)  # type: ignore[arg-type]
    controller.start()
    await eventually(lambda: attached_when_running, "RUNNING")
    assert attached_when_running == [True]
    await controller.remove()


@pytest.mark.asyncio
async def test_a_failed_attach_fails_the_task_with_the_providers_line(provider: RecordingNetwork) -> None:
    provider.fail_attach = "overlay: cannot move veth into /proc/1000/ns/net: no such process"
    glue, engine = NodeNetworking(provider), FakeEngine()
    task = task_on(attachment(BACKEND, "10.0.1.5/24", "api"))
    controller, reports = await run_controller(task, glue, engine)
    await eventually(lambda: states.FAILED in reports.states(), "task FAILED")
    assert states.RUNNING not in reports.states()
    assert reports.last().err == f"network: {provider.fail_attach}"
    await controller.remove()


@pytest.mark.asyncio
async def test_a_task_with_networks_on_a_node_without_network_plugin_fails() -> None:
    engine = FakeEngine()
    task = task_on(attachment(BACKEND, "10.0.1.5/24", "api"))
    controller, reports = await run_controller(task, NodeNetworking(None), engine)
    await eventually(lambda: states.FAILED in reports.states(), "task FAILED")
    assert "no network plugin" in reports.last().err
    await controller.remove()


@pytest.mark.asyncio
async def test_a_task_without_networks_never_calls_the_provider(provider: RecordingNetwork) -> None:
    glue, engine = NodeNetworking(provider), FakeEngine()
    controller, reports = await run_controller(make_task("img", node_id=NODE), glue, engine)
    await eventually(lambda: states.RUNNING in reports.states(), "RUNNING")
    await controller.remove()
    assert provider.calls == []


@pytest.mark.asyncio
async def test_a_local_task_that_exits_leaves_the_mesh_before_the_managers_know(
    provider: RecordingNetwork,
) -> None:
    glue, engine = NodeNetworking(provider), FakeEngine()
    glue.start()
    try:
        task = task_on(attachment(INGRESS, "10.0.0.5/24"), attachment(BACKEND, "10.0.1.5/24", "api"))
        controller, reports = await run_controller(task, glue, engine)
        await eventually(lambda: states.RUNNING in reports.states(), "RUNNING")
        glue.submit(state(backends=["10.0.0.5", "10.0.0.6"], records=True))
        await eventually(
            lambda: provider.published.get(("tcp", 8080)) == ["10.0.0.5", "10.0.0.6"], "published"
        )
        await eventually(lambda: BACKEND.id in provider.records, "records")

        engine.exit(task, 1)  # the managers still list it as a backend
        await eventually(lambda: provider.published[("tcp", 8080)] == ["10.0.0.6"], "dropped at once")
        await eventually(lambda: provider.records[BACKEND.id][0].task_addresses == ("10.0.1.6",), "no record")
        assert states.FAILED in reports.states()

        # A state the managers sent before they knew still does not bring it back.
        glue.submit(state(backends=["10.0.0.5", "10.0.0.6", "10.0.0.7"], records=True))
        await eventually(lambda: provider.published[("tcp", 8080)] == ["10.0.0.6", "10.0.0.7"], "kept out")
        await controller.remove()
    finally:
        await glue.close()


@pytest.mark.asyncio
async def test_a_task_asked_to_stop_leaves_the_mesh_before_its_container_stops(
    provider: RecordingNetwork,
) -> None:
    glue, engine = NodeNetworking(provider), FakeEngine()
    glue.start()
    published_at_shutdown: list[list[str]] = []
    real_shutdown = engine.shutdown

    async def shutdown(task: pb.Task, grace: float) -> None:
        await asyncio.sleep(0.2)  # the grace period: the mesh must not wait for it
        published_at_shutdown.append(list(provider.published[("tcp", 8080)]))
        await real_shutdown(task, grace)

    engine.shutdown = shutdown  # type: ignore[method-assign]
    try:
        task = task_on(attachment(INGRESS, "10.0.0.5/24"))
        controller, reports = await run_controller(task, glue, engine)
        await eventually(lambda: states.RUNNING in reports.states(), "RUNNING")
        glue.submit(state(backends=["10.0.0.5", "10.0.0.6"]))
        await eventually(
            lambda: provider.published.get(("tcp", 8080)) == ["10.0.0.5", "10.0.0.6"], "published"
        )
        stopping = pb.Task()
        stopping.CopyFrom(task)
        stopping.desired_state = pb.SHUTDOWN
        controller.update(stopping)
        await eventually(lambda: states.SHUTDOWN in reports.states(), "SHUTDOWN")
        assert published_at_shutdown == [["10.0.0.6"]]
        await controller.remove()
    finally:
        await glue.close()


@pytest.mark.asyncio
async def test_a_readopted_running_task_is_attached_again_once(provider: RecordingNetwork) -> None:
    glue, engine = NodeNetworking(provider), FakeEngine()
    task = task_on(attachment(BACKEND, "10.0.1.5/24", "api"))
    await engine.prepare(task)
    status = pb.TaskStatus(state=states.RUNNING, message="started")
    status.container.pid = 4242
    controller, _ = await run_controller(task, glue, engine, status)
    await eventually(lambda: (task.id, BACKEND.id) in provider.endpoints, "re-attached")
    assert provider.endpoints[(task.id, BACKEND.id)].sandbox == "/proc/4242/ns/net"
    await eventually(lambda: task.id in engine.waiting, "the controller waits on its container")
    assert provider.names().count("attach") == 1
    assert provider.names().count("create_network") == 1
    await controller.remove()
    assert not provider.networks
