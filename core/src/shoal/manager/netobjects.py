"""Networks in the store, and the addresses that go with services, tasks and nodes.

Every allocation happens inside the store transaction that records it, against what the
store already holds (``netalloc`` does the arithmetic): a service's virtual IPs when the
control API writes its spec, a task's addresses when the scheduler assigns it (so tasks that
never get a node hold none), a node's ingress address when its agent opens a session. An
address is free again once the object holding it is gone from the store or, for a task, once
it is dead (Swarm's rule: meant to stop and stopped; else a service restarting on a /24 would
run out while the history keeps its dead tasks), a VIP when its service is removed or leaves
the network. Nothing lives outside the store, so a new leader goes on from exactly where the
old one stopped.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from shoal import states
from shoal.ids import new_id
from shoal.manager import netalloc
from shoal.manager.objectrefs import matching
from shoal.proto import objects_pb2 as pb
from shoal.specs import SpecError, strings, whole_number
from shoal.store.memory import DELETE, Event, ObjectStore, ReadView, Restoring, Tx, finish, visit_in_steps

INGRESS_NAME = "ingress"
OVERLAY = "overlay"


def ingress_network(pools: Iterable[str], subnet_size: int) -> pb.Network:
    """The routing mesh's network ``swarm init`` creates: the pools' first subnet
    (10.0.0.0/24 with the default pool, as in Swarm) and the first VXLAN ID."""
    subnet = netalloc.next_subnet(list(pools), subnet_size, [])
    network = pb.Network(id=new_id(), vni=netalloc.FIRST_VNI)
    network.spec.annotations.name = INGRESS_NAME
    network.spec.driver = OVERLAY
    network.spec.ingress = True
    network.allocated.subnet = str(subnet)
    network.allocated.gateway = netalloc.gateway_for(subnet)
    return network


def address_pools(params: Mapping[str, Any]) -> tuple[list[str], int]:
    """``swarm init --default-addr-pool`` (repeatable) and ``--default-addr-pool-mask-length``
    from a request, checked (``SpecError``, one line)."""
    pools = strings(params, "default_addr_pool", "--default-addr-pool")
    size = params.get("default_addr_pool_mask_length")
    try:
        if size is not None:
            size = whole_number(size, "--default-addr-pool-mask-length", 1, netalloc.MAX_PREFIX)
        return netalloc.parse_pools(pools, size)
    except netalloc.AllocationError as exc:
        raise SpecError(str(exc)) from None


def find(networks: Iterable[pb.Network], ref: str) -> pb.Network | None:
    """A network by ID, name or unique ID prefix (None when none or several match)."""
    found = matching(networks, ref)
    return found[0] if len(found) == 1 else None


def ingress_of(networks: Iterable[pb.Network]) -> pb.Network | None:
    return next((n for n in networks if n.spec.ingress), None)


def has_ingress_ports(ports: Iterable[pb.PortConfig]) -> bool:
    return any(p.publish_mode == pb.PortConfig.INGRESS for p in ports)


def plain(address: str) -> str:
    """``10.0.1.5/24`` -> ``10.0.1.5``."""
    return address.split("/", 1)[0]


def host_of(addr: str) -> str:
    """The IP of a ``host:port`` address (``[v6]:port`` too), or "" when it has none."""
    if not addr:
        return ""
    host = addr.rsplit(":", 1)[0] if addr.count(":") == 1 or addr.startswith("[") else addr
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""


def node_ip(node: pb.Node) -> str:
    """The node's underlay address: where its agent said it serves other nodes, else the
    address its session came from."""
    return host_of(node.description.addr) or host_of(node.status.addr)


def task_dead(task: pb.Task) -> bool:
    """Swarm's rule for giving a task's addresses back: it is meant to stop and has stopped
    (its container, and with it the namespace its endpoints were in, is gone). The task keeps
    them in its record (``inspect`` shows where it was) until the reaper removes it."""
    return task.desired_state > states.RUNNING and task.status.state > states.RUNNING


def used_addresses(
    tasks: Iterable[pb.Task], services: Iterable[pb.Service], nodes: Iterable[pb.Node]
) -> dict[str, set[str]]:
    """Network ID -> every address held in it (tasks not dead, virtual IPs, nodes' ingress
    addresses)."""
    used: dict[str, set[str]] = {}
    for task in tasks:
        attachments = task.networks
        # Tasks without networks first, the cheap test: every registration and placement
        # scans every task (10,000 tasks: 55 ms a scan with the state test first, 16 ms now).
        if not attachments or task_dead(task):
            continue
        for attachment in attachments:
            used.setdefault(attachment.network.id, set()).update(attachment.addresses)
    for service in services:
        for vip in service.endpoint.virtual_ips:
            used.setdefault(vip.network_id, set()).add(vip.addr)
    for node in nodes:
        for attachment in node.attachments:
            used.setdefault(attachment.network.id, set()).update(attachment.addresses)
    return used


def holdings(kind: str, obj: Any) -> Iterator[tuple[str, str]]:
    """(network ID, plain address) of each address ``obj`` holds, by ``used_addresses``' rule."""
    if kind == "task":
        if not obj.networks or task_dead(obj):
            return
        for attachment in obj.networks:
            network_id = attachment.network.id
            for address in attachment.addresses:
                yield network_id, plain(address)
    elif kind == "service":
        for vip in obj.endpoint.virtual_ips:
            yield vip.network_id, plain(vip.addr)
    elif kind == "node":
        for attachment in obj.attachments:
            network_id = attachment.network.id
            for address in attachment.addresses:
                yield network_id, plain(address)


_HOLDERS = ("task", "service", "node")


def _holds_the_same(kind: str, old: Any, new: Any) -> bool:
    """Whether ``new`` holds exactly the addresses ``old`` held (compared in protobuf's C code,
    without listing them)."""
    if kind == "task":
        return bool(task_dead(old) == task_dead(new) and old.networks == new.networks)
    if kind == "service":
        return bool(old.endpoint.virtual_ips == new.endpoint.virtual_ips)
    return bool(old.attachments == new.attachments)


def _host_number(address: str, otherwise: int) -> int:
    """The plain IPv4 ``address`` as a number (``otherwise`` when it is not one)."""
    try:
        return int(ipaddress.IPv4Address(address))
    except ValueError:
        return otherwise


class UsedAddresses:
    """Every network's used addresses, kept as the store applies (``ObjectStore.derived``).

    Each write that allocated (a placement commit, a service create or update, a session open)
    built its books from a scan of every task, service and node, and its first ``take`` walked
    up from the subnet's first address past every used one: at 20,000 tasks about 65 ms of the
    leader's loop per write. This counts, per network, the holders of each address (a live
    task, a VIP, a node's ingress address), changed by the difference each committed change
    makes, and remembers how far up every address is taken, so a book costs a copy of its
    network's addresses and its first ``take`` starts at the lowest free one.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        #: Network ID -> address -> how many hold it (a plain dict: a set of its keys is built
        #: three times faster than of a Counter's).
        self._held: dict[str, dict[str, int]] = {}
        #: Network ID -> a host number below which every address is held (or is the gateway)
        #: in the committed view; lowered when an address is given back.
        self._floor: dict[str, int] = {}

    def restored(self) -> None:
        finish(self.restoring(self.store.view))()

    def restoring(self, view: ReadView) -> Restoring:
        """Count what ``view``'s objects hold a step at a time (``ObjectStore.restore_steps``),
        aside."""
        fresh = UsedAddresses(self.store)
        for kind in _HOLDERS:

            def visit(obj: Any, kind: str = kind) -> None:
                fresh._count(kind, obj, 1)

            yield from visit_in_steps(view.table(kind).all(), visit)
        return lambda: vars(self).update(vars(fresh))

    def applied(self, events: list[Event]) -> None:
        for event in events:
            kind = event.kind
            if kind not in _HOLDERS:
                continue
            old = event.old
            if kind == "task" and not event.obj.networks and (old is None or not old.networks):
                continue  # most tasks: no networks, no address (the cheapest test first)
            if old is not None:
                if event.action != DELETE and _holds_the_same(kind, old, event.obj):
                    continue  # a status report, a heartbeat: ~2 us instead of ~20
                self._count(kind, old, -1)
            if event.action != DELETE:
                self._count(kind, event.obj, 1)

    def _count(self, kind: str, obj: Any, sign: int) -> None:
        for network_id, address in holdings(kind, obj):
            held = self._held.setdefault(network_id, {})
            count = held.get(address, 0) + sign
            if count:
                held[address] = count
                continue
            del held[address]
            if not held:
                del self._held[network_id]
            self._lower_floor(network_id, address)

    def _lower_floor(self, network_id: str, address: str) -> None:
        floor = self._floor.get(network_id)
        if floor is not None:
            self._floor[network_id] = min(floor, _host_number(address, floor))

    def used_in(self, network_id: str, tx: Tx) -> set[str]:
        """The plain addresses held in the network as ``tx.view`` sees it: the committed
        view's, with the changes of the transactions before ``tx`` in its group."""
        return self._used(network_id, self._group_delta(network_id, tx))

    def _used(self, network_id: str, delta: Counter[str]) -> set[str]:
        """The committed view's holders of the network's addresses, changed by ``delta``."""
        held = self._held.get(network_id, {})
        used = set(held)
        for address, change in delta.items():
            if held.get(address, 0) + change > 0:
                used.add(address)
            else:
                used.discard(address)
        return used

    def book(self, network: pb.Network, tx: Tx) -> netalloc.AddressBook:
        """The network's address book for ``tx``: what ``AddressBook.of`` would build from a
        scan of ``tx.view``, its search starting at the lowest free address."""
        subnet = netalloc.IPv4Net(network.allocated.subnet)
        gateway = network.allocated.gateway
        delta = self._group_delta(network.id, tx)  # one pass over the group's changes
        used = self._used(network.id, delta)
        used.add(gateway)
        start = self._lowest_free(network.id, subnet, gateway)
        for address, change in delta.items():
            if change < 0 and address not in used:  # given back by a write earlier in the group
                start = min(start, _host_number(address, start))
        return netalloc.AddressBook(subnet, gateway, used, start)

    def _lowest_free(self, network_id: str, subnet: netalloc.IPv4Net, gateway: str) -> int:
        """The lowest host number of ``subnet`` no one holds in the committed view."""
        held = self._held.get(network_id, {})
        number = max(int(subnet.network_address) + 1, self._floor.get(network_id, 0))
        last = int(subnet.broadcast_address) - 1
        while number <= last:
            address = str(ipaddress.IPv4Address(number))
            if address != gateway and address not in held:
                break
            number += 1
        self._floor[network_id] = number
        return number

    def _group_delta(self, network_id: str, tx: Tx) -> Counter[str]:
        """How many more (or fewer) holders each address of the network has in ``tx.view``
        than in the committed view."""
        delta: Counter[str] = Counter()
        committed = self.store.view
        for kind, action, obj in tx.group_changes():
            if kind not in _HOLDERS:
                continue
            before = committed.table(kind).get(obj.id)
            if before is not None:
                delta.subtract(a for n, a in holdings(kind, before) if n == network_id)
            if action != DELETE:
                delta.update(a for n, a in holdings(kind, obj) if n == network_id)
        return delta


class Allocations:
    """The address books of one transaction: built from the state under it on first use, then
    kept up to date with what this transaction takes. A transaction of the store reads its
    network's addresses from ``UsedAddresses``; one made by hand (a test) scans the view."""

    def __init__(self, tx: Tx) -> None:
        # A weak reference: the transaction holds its allocations (``of``), and a strong one
        # back made each a reference cycle that only the garbage collector could free, with
        # every task version the transaction wrote (500 per scheduler batch: at 100,000 tasks
        # hundreds of thousands of objects waiting for, and lengthening, a full collection).
        self._tx = weakref.ref(tx)
        self._used: dict[str, set[str]] | None = None
        self._books: dict[str, netalloc.AddressBook] = {}

    @property
    def tx(self) -> Tx:
        tx = self._tx()
        assert tx is not None, "allocations used after their transaction"
        return tx

    @classmethod
    def of(cls, tx: Tx) -> Allocations:
        """The transaction's allocations: one per transaction, because what it takes is not in
        ``tx.view`` until it commits (two books in one write would hand out one address twice)."""
        existing = tx.__dict__.get("_network_allocations")
        if not isinstance(existing, Allocations):
            existing = tx.__dict__["_network_allocations"] = cls(tx)
        return existing

    def _network(self, network_id: str) -> pb.Network | None:
        found: pb.Network | None = self.tx.get("network", network_id)
        return found

    def _ingress(self) -> pb.Network | None:
        return ingress_of(self.tx.view.networks.all())

    def book(self, network: pb.Network) -> netalloc.AddressBook:
        book = self._books.get(network.id)
        if book is None:
            store = self.tx.store
            if store is not None:
                book = store.derived(UsedAddresses).book(network, self.tx)
            else:
                if self._used is None:
                    view = self.tx.view
                    self._used = used_addresses(view.tasks.all(), view.services.all(), view.nodes.all())
                book = netalloc.AddressBook.of(
                    network.allocated.subnet, network.allocated.gateway, self._used.get(network.id, ())
                )
            self._books[network.id] = book
        return book

    # ------------------------------------------------------------------ services

    def service_vips(self, service: pb.Service) -> None:
        """Fill ``service.endpoint.virtual_ips``: one per network of the service (the ingress
        network first when it publishes ingress ports), none in dnsrr mode. A network it was
        on keeps its address. Raises ``AllocationError`` (nothing is stored)."""
        wanted = self.service_networks(service.spec, service.spec.endpoint.ports)
        kept = {vip.network_id: vip.addr for vip in service.endpoint.virtual_ips}
        del service.endpoint.virtual_ips[:]
        if service.spec.endpoint.mode == pb.EndpointSpec.DNSRR:
            return
        for network in wanted:
            address = kept.get(network.id) or self.book(network).take()
            service.endpoint.virtual_ips.add(network_id=network.id, addr=address)

    def service_networks(self, spec: pb.ServiceSpec, ports: Iterable[pb.PortConfig]) -> list[pb.Network]:
        """The networks a service is on: the ingress network when it has ingress ports, then
        its ``--network`` ones. Raises ``AllocationError`` for one that does not exist."""
        networks: list[pb.Network] = []
        if has_ingress_ports(ports):
            ingress = self._ingress()
            if ingress is None:
                raise netalloc.AllocationError(
                    "the swarm has no ingress network for published ports: create one with "
                    "shoal network create -d overlay --ingress ingress, or publish with mode=host"
                )
            networks.append(ingress)
        for config in spec.networks:
            network = self._network(config.target)
            if network is None:
                raise netalloc.AllocationError(
                    f"network {config.target} not found (it was removed): see shoal network ls"
                )
            networks.append(network)
        return networks

    # ------------------------------------------------------------------ tasks

    def task_networks(self, task: pb.Task) -> None:
        """Fill ``task.networks`` for a task being assigned (once: a task keeps its addresses
        until it is removed). Raises ``AllocationError`` when a network is full."""
        if task.networks:
            return
        service = self.tx.service(task.service_id)
        if service is None:
            return
        if not service.spec.networks and not task.endpoint.ports:
            return  # on no network (most services): nothing to look up per task placed
        aliases = {config.target: list(config.aliases) for config in service.spec.networks}
        name = service.spec.annotations.name
        try:
            networks = self.service_networks(service.spec, task.endpoint.ports)
        except netalloc.AllocationError:
            # A network of the service vanished under it: the task gets the ones that remain.
            networks = [n for c in service.spec.networks if (n := self._network(c.target)) is not None]
        for network in networks:
            attachment = task.networks.add()
            attachment.network.CopyFrom(network)
            attachment.addresses.append(self.book(network).take())
            if not network.spec.ingress:
                attachment.aliases.extend([name, *aliases.get(network.id, [])])

    # ------------------------------------------------------------------ nodes

    def node_ingress(self, node: pb.Node) -> bool:
        """Give ``node`` its address on the ingress network (the source of the ingress
        connections it forwards); drop attachments to networks that are gone. Returns whether
        ``node`` changed."""
        ingress = self._ingress()
        current = [a for a in node.attachments if self._network(a.network.id) is not None]
        changed = len(current) != len(node.attachments)
        if ingress is not None and not any(a.network.id == ingress.id for a in current):
            attachment = pb.NetworkAttachment(addresses=[self.book(ingress).take()])
            attachment.network.CopyFrom(ingress)
            current.append(attachment)
            changed = True
        if changed:
            del node.attachments[:]
            node.attachments.extend(current)
        return changed


def networks_differ(task: pb.Task, service: pb.Service) -> bool:
    """Whether an assigned task is on other networks (or with other aliases) than its service
    asks for now: ``--network-add/-rm`` replaces the tasks, as a changed task spec does."""
    if not task.networks and task.status.state < states.ASSIGNED:
        return False  # it gets the service's networks when it is assigned
    have = sorted((a.network.id, tuple(a.aliases[1:])) for a in task.networks if not a.network.spec.ingress)
    want = sorted((c.target, tuple(c.aliases)) for c in service.spec.networks)
    return have != want


def services_using(services: Iterable[pb.Service], network: pb.Network) -> list[str]:
    """Names of the services attached to ``network`` (for the ingress network: those that
    publish ingress ports), sorted."""
    names = []
    for service in services:
        if network.spec.ingress:
            uses = has_ingress_ports(service.spec.endpoint.ports)
        else:
            uses = any(config.target == network.id for config in service.spec.networks)
        if uses:
            names.append(service.spec.annotations.name)
    return sorted(names)


def inspect_shape(network: pb.Network) -> dict[str, Any]:
    """``network inspect``: docker's shape (Name, Id, Scope, Driver, IPAM.Config, ...)."""
    return {
        "Name": network.spec.annotations.name,
        "Id": network.id,
        "Created": datetime.fromtimestamp(network.meta.created_at, UTC).isoformat().replace("+00:00", "Z"),
        "Scope": "swarm",
        "Driver": network.spec.driver or OVERLAY,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": None,
            "Config": [{"Subnet": network.allocated.subnet, "Gateway": network.allocated.gateway}],
        },
        "Internal": False,
        "Attachable": network.spec.attachable,
        "Ingress": network.spec.ingress,
        "Options": {"com.docker.network.driver.overlay.vxlanid_list": str(network.vni)}
        | dict(network.spec.driver_opts),
        "Labels": dict(network.spec.annotations.labels),
    }
