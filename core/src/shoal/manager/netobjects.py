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
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from shoal import states
from shoal.ids import new_id
from shoal.manager import netalloc
from shoal.manager.objectrefs import matching
from shoal.proto import objects_pb2 as pb
from shoal.specs import SpecError, strings, whole_number
from shoal.store.memory import Tx

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


class Allocations:
    """The address books of one transaction: built from the state under it on first use, then
    kept up to date with what this transaction takes (one scan of the store per transaction)."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self._used: dict[str, set[str]] | None = None
        self._books: dict[str, netalloc.AddressBook] = {}

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
