"""Network allocation: subnets from the pools, overlap refused, VNIs unique, one address per task
and per service VIP, the node's ingress address, and the control API's one-line refusals that
leave the store unchanged."""

from __future__ import annotations

import re

import pytest
from shoal import states
from shoal.manager import netalloc, netobjects
from shoal.manager import ports as portalloc
from shoal.manager.controlapi import ControlAPI, ControlError
from shoal.manager.netcontrol import NetworkControl
from shoal.manager.scheduler_driver import SchedulerDriver
from shoal.proto import objects_pb2 as pb
from shoal.roles.network import FEATURE_INGRESS
from shoal.roles.scheduler import Placement
from shoal.store.memory import ObjectStore, Tx, copy
from shoal.testing.objectstore import instant_store

# ---------------------------------------------------------------------------- pure arithmetic


def test_pool_subnets_skip_used_ones_and_pools_are_checked() -> None:
    used = [netalloc.IPv4Net("10.0.0.0/24"), netalloc.IPv4Net("10.0.1.0/24")]
    assert str(netalloc.next_subnet([], 0, used)) == "10.0.2.0/24"
    assert str(netalloc.next_subnet(["10.20.0.0/16"], 26, [])) == "10.20.0.0/26"
    assert netalloc.parse_pools([], None) == (["10.0.0.0/8"], 24)
    assert netalloc.parse_pools(["10.20.0.0/16", "10.30.0.0/16"], 20) == (
        ["10.20.0.0/16", "10.30.0.0/16"],
        20,
    )
    for pools, size, says in [
        (["10.0.0.0/33"], 24, "give an IPv4 CIDR"),
        (["10.0.0.1/16"], 24, "host bits are set; did you mean 10.0.0.0/16?"),
        (["10.0.0.0/16", "10.0.128.0/17"], 24, "10.0.128.0/17 overlaps 10.0.0.0/16"),
        (["10.0.0.0/16"], 8, "pool 10.0.0.0/16 is smaller than a /8"),
        (["10.0.0.0/16"], 30, "prefix length from 1 to 29"),
    ]:
        with pytest.raises(netalloc.AllocationError, match=re.escape(says)):
            netalloc.parse_pools(pools, size)


def test_full_pool_and_overlap_are_one_line() -> None:
    with pytest.raises(netalloc.AllocationError, match="address pools are full"):
        netalloc.next_subnet(["10.9.0.0/24"], 24, [netalloc.IPv4Net("10.9.0.0/23")])
    with pytest.raises(
        netalloc.AllocationError, match=re.escape('overlaps subnet 10.0.0.0/24 of network "ingress"')
    ):
        netalloc.check_subnet(
            netalloc.IPv4Net("10.0.0.128/25"), [("ingress", netalloc.IPv4Net("10.0.0.0/24"))]
        )


def test_addresses_skip_the_gateway_and_used_ones_until_the_subnet_is_full() -> None:
    book = netalloc.AddressBook.of("10.0.5.0/29", "10.0.5.1", ["10.0.5.3/29"])
    assert [book.take() for _ in range(4)] == ["10.0.5.2/29", "10.0.5.4/29", "10.0.5.5/29", "10.0.5.6/29"]
    with pytest.raises(netalloc.AllocationError, match="no free address left"):
        book.take()


def test_vnis_are_the_lowest_free_from_4096() -> None:
    assert netalloc.next_vni([]) == 4096
    assert netalloc.next_vni([4096, 4097, 4099]) == 4098


def test_gateway_must_be_a_host_of_the_subnet() -> None:
    net = netalloc.IPv4Net("10.1.0.0/24")
    assert netalloc.gateway_for(net) == "10.1.0.1"
    assert netalloc.gateway_for(net, "10.1.0.254") == "10.1.0.254"
    with pytest.raises(netalloc.AllocationError, match=re.escape("not a host address of subnet 10.1.0.0/24")):
        netalloc.gateway_for(net, "10.2.0.1")


# ---------------------------------------------------------------------------- in the store


@pytest.fixture(autouse=True)
def mesh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The swarm's network plugin declares the routing mesh (as the default one does)."""
    monkeypatch.setattr(portalloc, "network_features", lambda plugin: frozenset({FEATURE_INGRESS}))


async def _swarm() -> tuple[ObjectStore, ControlAPI, NetworkControl]:
    store = await instant_store()

    def seed(tx: Tx) -> None:
        tx.create(netobjects.ingress_network([], 0))
        cluster = tx.cluster()
        assert cluster is not None
        cluster = copy(cluster)
        cluster.plugins.network = "fake-ingress"
        tx.update(cluster)

    await store.update(seed)
    return store, ControlAPI(store, "m1"), NetworkControl(store)


def _snapshot(store: ObjectStore) -> bytes:
    return store.snapshot()


async def test_networks_get_pool_subnets_and_unique_vnis_and_ingress_is_10_0_0_0() -> None:
    store, _, nets = await _swarm()
    await nets.handlers()["network.create"]({"name": "front"})
    await nets.handlers()["network.create"](
        {"name": "back", "subnet": "10.99.0.0/16", "gateway": "10.99.0.254"}
    )
    await nets.handlers()["network.create"]({"name": "third"})
    by_name = {n.spec.annotations.name: n for n in store.view.networks.all()}
    assert by_name["ingress"].allocated.subnet == "10.0.0.0/24" and by_name["ingress"].spec.ingress
    assert by_name["front"].allocated.subnet == "10.0.1.0/24"
    assert by_name["back"].allocated.subnet == "10.99.0.0/16"
    assert by_name["back"].allocated.gateway == "10.99.0.254"
    assert by_name["third"].allocated.subnet == "10.0.2.0/24"
    assert len({n.vni for n in by_name.values()}) == 4


@pytest.mark.parametrize(
    ("params", "says"),
    [
        (
            {"name": "x", "subnet": "10.0.1.0/25"},
            'subnet 10.0.1.0/25 overlaps subnet 10.0.1.0/24 of network "front"',
        ),
        ({"name": "x", "subnet": "10.5.0.0/40"}, 'invalid --subnet "10.5.0.0/40": give an IPv4 CIDR'),
        ({"name": "x", "subnet": "banana"}, 'invalid --subnet "banana"'),
        ({"name": "front"}, 'network with name "front" already exists'),
        ({"name": "x", "driver": "bridge"}, 'invalid --driver "bridge"'),
        ({"name": "x", "gateway": "10.7.0.1"}, "--gateway needs --subnet"),
        ({"name": "-bad"}, 'invalid network name "-bad"'),
    ],
)
async def test_network_create_refusals_change_nothing(params: dict[str, str], says: str) -> None:
    store, _, nets = await _swarm()
    await nets.handlers()["network.create"]({"name": "front"})
    before = _snapshot(store)
    with pytest.raises(ControlError) as refused:
        await nets.handlers()["network.create"](params)
    assert says in refused.value.message and "\n" not in refused.value.message
    assert _snapshot(store) == before


async def test_service_networks_get_a_vip_each_kept_across_updates_none_in_dnsrr() -> None:
    store, api, nets = await _swarm()
    await nets.handlers()["network.create"]({"name": "front"})
    await nets.handlers()["network.create"]({"name": "back"})
    await api.handlers()["service.create"](
        {"name": "api", "image": "alpine", "networks": ["front", "name=back,alias=db"]}
    )
    service = store.view.service_by_name("api")
    assert service is not None
    front, back = (netobjects.find(store.view.networks.all(), n) for n in ("front", "back"))
    assert front is not None and back is not None
    assert [(c.target, list(c.aliases)) for c in service.spec.networks] == [(front.id, []), (back.id, ["db"])]
    vips = {v.network_id: v.addr for v in service.endpoint.virtual_ips}
    assert vips == {front.id: "10.0.1.2/24", back.id: "10.0.2.2/24"}

    await api.handlers()["service.update"]({"service": "api", "network_rm": ["front"], "env_add": ["A=1"]})
    service = store.view.service_by_name("api")
    assert service is not None
    assert [(v.network_id, v.addr) for v in service.endpoint.virtual_ips] == [(back.id, "10.0.2.2/24")]

    await api.handlers()["service.create"](
        {"name": "rr", "image": "alpine", "networks": ["back"], "endpoint_mode": "dnsrr"}
    )
    rr = store.view.service_by_name("rr")
    assert rr is not None and not rr.endpoint.virtual_ips and rr.spec.endpoint.mode == pb.EndpointSpec.DNSRR


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"networks": ["nosuch"]}, 'network "nosuch" not found'),
        ({"networks": ["front", "front"]}, "already attached to network"),
        ({"networks": ["ingress"]}, "cannot be attached to the ingress network by name"),
        ({"networks": ["name=front,color=red"]}, "use NETWORK or name=NETWORK"),
        ({"endpoint_mode": "round"}, 'invalid --endpoint-mode "round": use vip or dnsrr'),
        ({"endpoint_mode": "dnsrr", "publish": ["8080:80"]}, "can't be used with dnsrr mode"),
    ],
)
async def test_service_network_refusals_change_nothing(params: dict[str, object], says: str) -> None:
    store, api, nets = await _swarm()
    await nets.handlers()["network.create"]({"name": "front"})
    before = _snapshot(store)
    with pytest.raises(ControlError) as refused:
        await api.handlers()["service.create"]({"name": "web", "image": "alpine", **params})
    assert says in refused.value.message and "\n" not in refused.value.message
    assert _snapshot(store) == before


async def test_network_rm_refused_while_used_naming_the_services() -> None:
    store, api, nets = await _swarm()
    await nets.handlers()["network.create"]({"name": "front"})
    await api.handlers()["service.create"]({"name": "web", "image": "alpine", "networks": ["front"]})
    await api.handlers()["service.create"]({"name": "api", "image": "alpine", "networks": ["front"]})
    with pytest.raises(ControlError, match=r'network "front" is in use by service\(s\) api, web'):
        await nets.handlers()["network.rm"]({"networks": ["front"]})
    await api.handlers()["service.rm"]({"services": ["web", "api"]})
    assert await nets.handlers()["network.rm"]({"networks": ["front"]}) == ["front"]
    assert netobjects.find(store.view.networks.all(), "front") is None


async def _place(store: ObjectStore, node_id: str) -> None:
    """What the scheduler driver commits for every unassigned task: placed on ``node_id``."""
    driver = SchedulerDriver.__new__(SchedulerDriver)
    pending = [t for t in store.view.tasks.all() if t.status.state <= states.PENDING]
    decisions = [Placement(task_id=t.id, node_id=node_id) for t in pending]
    await store.update(lambda tx: driver._commit(tx, decisions, {node_id: None}))  # type: ignore[dict-item]


async def _tasks_for(store: ObjectStore, service: pb.Service, count: int) -> None:
    from shoal.manager.tasks import new_task

    def create(tx: Tx) -> None:
        for slot in range(1, count + 1):
            tx.create(new_task(service, slot))

    await store.update(create)


async def test_assigned_tasks_get_one_address_per_network_freed_when_dead_or_removed() -> None:
    store, api, nets = await _swarm()
    await nets.handlers()["network.create"]({"name": "front"})
    await store.update(lambda tx: tx.create(pb.Node(id="w1")))
    await api.handlers()["service.create"](
        {"name": "web", "image": "alpine", "networks": ["front"], "publish": ["8080:80"]}
    )
    web = store.view.service_by_name("web")
    assert web is not None
    ingress_vip, front_vip = (v.addr for v in web.endpoint.virtual_ips)
    assert (ingress_vip, front_vip) == ("10.0.0.2/24", "10.0.1.2/24")
    await _tasks_for(store, web, 2)
    await _place(store, "w1")
    tasks = sorted(store.view.service_tasks(web.id), key=lambda t: t.slot)
    assert [t.status.state for t in tasks] == [states.ASSIGNED, states.ASSIGNED]
    attachments = [
        [(a.network.spec.annotations.name, list(a.addresses), list(a.aliases)) for a in t.networks]
        for t in tasks
    ]
    assert attachments == [
        [("ingress", ["10.0.0.3/24"], []), ("front", ["10.0.1.3/24"], ["web"])],
        [("ingress", ["10.0.0.4/24"], []), ("front", ["10.0.1.4/24"], ["web"])],
    ]
    await store.update(lambda tx: tx.delete("task", tasks[0].id))  # the reaper removes it
    await _tasks_for(store, web, 1)
    await _place(store, "w1")
    newest = max(store.view.service_tasks(web.id), key=lambda t: t.meta.created_at)
    assert [list(a.addresses) for a in newest.networks] == [["10.0.0.3/24"], ["10.0.1.3/24"]]

    def stop(tx: Tx, state: int) -> None:  # the second task: shut down, then stopped
        task = copy(tx.task(tasks[1].id))  # type: ignore[type-var]
        task.desired_state = states.SHUTDOWN  # type: ignore[assignment]
        task.status.state = state  # type: ignore[assignment]
        tx.update(task)

    await store.update(lambda tx: stop(tx, states.RUNNING))  # still running: keeps its addresses
    await _tasks_for(store, web, 1)
    await _place(store, "w1")
    newest = max(store.view.service_tasks(web.id), key=lambda t: t.meta.created_at)
    assert [list(a.addresses) for a in newest.networks] == [["10.0.0.5/24"], ["10.0.1.5/24"]]
    await store.update(lambda tx: stop(tx, states.SHUTDOWN))  # dead: its addresses are free again
    await _tasks_for(store, web, 1)
    await _place(store, "w1")
    newest = max(store.view.service_tasks(web.id), key=lambda t: t.meta.created_at)
    assert [list(a.addresses) for a in newest.networks] == [["10.0.0.4/24"], ["10.0.1.4/24"]]


async def test_a_full_network_leaves_the_task_pending_with_the_reason() -> None:
    store, api, nets = await _swarm()
    await nets.handlers()["network.create"](
        {"name": "tiny", "subnet": "10.50.0.0/29"}
    )  # 6 hosts: gateway + VIP + 4
    await store.update(lambda tx: tx.create(pb.Node(id="w1")))
    await api.handlers()["service.create"]({"name": "web", "image": "alpine", "networks": ["tiny"]})
    web = store.view.service_by_name("web")
    assert web is not None
    await _tasks_for(store, web, 5)
    await _place(store, "w1")
    by_state = sorted(t.status.state for t in store.view.service_tasks(web.id))
    assert by_state == [states.PENDING] + [states.ASSIGNED] * 4
    pending = next(t for t in store.view.service_tasks(web.id) if t.status.state == states.PENDING)
    assert "10.50.0.0/29 has no free address left" in pending.status.err and not pending.networks


async def test_node_ingress_address_is_allocated_once_and_survives_a_new_allocator() -> None:
    store, _, _ = await _swarm()
    await store.update(lambda tx: [tx.create(pb.Node(id=n)) for n in ("w1", "w2")] and None)

    def register(tx: Tx) -> None:
        for node_id in ("w1", "w2"):
            node = copy(tx.node(node_id))  # type: ignore[type-var]
            assert netobjects.Allocations.of(tx).node_ingress(node)
            tx.update(node)

    await store.update(register)
    w1, w2 = store.view.nodes.get("w1"), store.view.nodes.get("w2")
    assert w1 is not None and w2 is not None
    assert [list(a.addresses) for a in w1.attachments] == [["10.0.0.2/24"]]
    assert [list(a.addresses) for a in w2.attachments] == [["10.0.0.3/24"]]

    def again(tx: Tx) -> None:  # a new leader's allocator: it reads what the store holds
        node = copy(tx.node("w1"))  # type: ignore[type-var]
        assert not netobjects.Allocations.of(tx).node_ingress(node)

    await store.update(again)


async def test_network_add_and_rm_make_assigned_tasks_dirty_a_scale_does_not() -> None:
    from shoal.manager.updater import is_dirty

    store, api, nets = await _swarm()
    await nets.handlers()["network.create"]({"name": "front"})
    await nets.handlers()["network.create"]({"name": "back"})
    await store.update(lambda tx: tx.create(pb.Node(id="w1")))
    await api.handlers()["service.create"]({"name": "web", "image": "alpine", "networks": ["front"]})
    web = store.view.service_by_name("web")
    assert web is not None
    await _tasks_for(store, web, 1)
    await _place(store, "w1")
    (task,) = store.view.service_tasks(web.id)

    def current() -> pb.Service:
        service = store.view.service_by_name("web")
        assert service is not None
        return service

    await api.handlers()["service.scale"]({"service": "web", "replicas": 3})
    assert not is_dirty(task, current())
    await api.handlers()["service.update"]({"service": "web", "network_add": ["back"]})
    assert is_dirty(task, current())
    await api.handlers()["service.update"]({"service": "web", "network_rm": ["back"]})
    assert not is_dirty(task, current())  # back where the task is
    await api.handlers()["service.update"]({"service": "web", "network_rm": ["front"]})
    assert is_dirty(task, current())


async def test_a_new_leader_allocates_from_what_the_store_holds() -> None:
    """A replica that restored the old leader's state (as a new leader has it) hands out no
    subnet, VNI, VIP or task address the old one gave: nothing lives outside the store."""
    old, api, nets = await _swarm()
    await nets.handlers()["network.create"]({"name": "front"})
    await old.update(lambda tx: tx.create(pb.Node(id="w1")))
    await api.handlers()["service.create"](
        {"name": "web", "image": "alpine", "networks": ["front"], "publish": ["80"]}
    )
    web = old.view.service_by_name("web")
    assert web is not None
    await _tasks_for(old, web, 3)
    await _place(old, "w1")

    new = await instant_store()
    new.restore(old.applied_index, old.snapshot())
    new_api, new_nets = ControlAPI(new, "m2"), NetworkControl(new)
    await new_nets.handlers()["network.create"]({"name": "back"})
    await new_api.handlers()["service.create"](
        {"name": "api", "image": "alpine", "networks": ["front"], "publish": ["81"]}
    )
    api_service = new.view.service_by_name("api")
    assert api_service is not None
    await _tasks_for(new, api_service, 3)
    await _place(new, "w1")

    networks = list(new.view.networks.all())
    assert len({n.allocated.subnet for n in networks}) == len({n.vni for n in networks}) == len(networks) == 3
    used = netobjects.used_addresses(new.view.tasks.all(), new.view.services.all(), new.view.nodes.all())
    held = [a for t in new.view.tasks.all() for n in t.networks for a in n.addresses]
    held += [v.addr for s in new.view.services.all() for v in s.endpoint.virtual_ips]
    assert len(held) == len(set(held)) == sum(len(v) for v in used.values()) == 16  # 6 tasks x 2 + 2 x 2 VIPs


async def test_the_ingress_network_can_be_removed_when_unused_and_made_again() -> None:
    store, api, nets = await _swarm()
    await api.handlers()["service.create"]({"name": "web", "image": "alpine", "publish": ["8080:80"]})
    with pytest.raises(ControlError, match="in use by services that publish ingress ports: web"):
        await nets.handlers()["network.rm"]({"networks": ["ingress"]})
    await api.handlers()["service.rm"]({"services": ["web"]})
    await nets.handlers()["network.rm"]({"networks": ["ingress"]})
    with pytest.raises(ControlError, match="the swarm has no ingress network for published ports"):
        await api.handlers()["service.create"]({"name": "web", "image": "alpine", "publish": ["8080:80"]})
    await nets.handlers()["network.create"]({"name": "mesh", "ingress": True})
    with pytest.raises(ControlError, match=re.escape('the swarm already has an ingress network ("mesh")')):
        await nets.handlers()["network.create"]({"name": "mesh2", "ingress": True})
    await api.handlers()["service.create"]({"name": "web", "image": "alpine", "publish": ["8080:80"]})
    web = store.view.service_by_name("web")
    assert web is not None and web.endpoint.virtual_ips[0].addr == "10.0.0.2/24"
