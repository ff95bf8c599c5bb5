"""The control API's ``network.*`` methods: create, ls, inspect, rm (docker's commands).

A network's subnet comes from the swarm's address pools unless ``--subnet`` names one (which
must not overlap another network's); its VXLAN ID is the lowest free one. Both are chosen
inside the write, against what the store holds, so two creates at once never collide. A
network in use by a service cannot be removed (the message names the services); nor can the
ingress network while a service publishes an ingress port. ``network rm`` and ``inspect``
take several references and are all-or-nothing here; the CLI calls them once per name, as
docker's does, so each name succeeds or fails on its own.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from shoal.ids import new_id
from shoal.manager import listfilters, methods, netalloc
from shoal.manager import requests as rq
from shoal.manager.controlapi import ControlError
from shoal.manager.methods import Handler
from shoal.manager.netobjects import INGRESS_NAME, OVERLAY, find, ingress_of, inspect_shape, services_using
from shoal.proto import objects_pb2 as pb
from shoal.roles.transport import StatusCode
from shoal.specs import SpecError, strings
from shoal.store.memory import ObjectStore, Tx

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}\Z")


def _invalid(message: str) -> ControlError:
    return ControlError(StatusCode.INVALID_ARGUMENT, message)


def network_spec(params: dict[str, Any]) -> pb.NetworkSpec:
    """The spec ``network create`` asks for, checked (the subnet's overlap is checked in the write)."""
    name = params.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid("a network name is required: shoal network create -d overlay NAME")
    if not _NAME.match(name):
        raise _invalid(
            f'invalid network name "{name}": use up to 63 letters, digits, "-", "_" or ".", '
            "starting with a letter or digit"
        )
    driver = params.get("driver") or OVERLAY
    if driver != OVERLAY:
        raise _invalid(f'invalid --driver "{driver}": swarm networks use the overlay driver (-d overlay)')
    spec = pb.NetworkSpec(driver=OVERLAY, attachable=bool(params.get("attachable")))
    spec.ingress = bool(params.get("ingress"))
    spec.annotations.name = name
    try:
        for text in strings(params, "labels", "--label"):
            key, _, value = text.partition("=")
            if not key:
                raise SpecError(f'invalid --label "{text}": use KEY=VALUE')
            spec.annotations.labels[key] = value
        for text in strings(params, "options", "--opt"):
            key, _, value = text.partition("=")
            if not key:
                raise SpecError(f'invalid --opt "{text}": use KEY=VALUE')
            spec.driver_opts[key] = value
        subnet = str(params.get("subnet") or "")
        gateway = str(params.get("gateway") or "")
        if gateway and not subnet:
            raise SpecError("--gateway needs --subnet (the gateway of a pool subnet is its first address)")
        if subnet:
            net = netalloc.parse_subnet(subnet)
            spec.ipam.subnet = str(net)
            spec.ipam.gateway = netalloc.gateway_for(net, gateway)
    except (SpecError, netalloc.AllocationError) as exc:
        raise _invalid(str(exc)) from None
    if spec.ingress and spec.attachable:
        raise _invalid("the ingress network cannot be attachable")
    return spec


def allocate(tx: Tx, spec: pb.NetworkSpec) -> pb.Network:
    """A new network for ``spec``: its subnet (given, or the pools' first free one), gateway and
    VXLAN ID, against every network in the store."""
    existing = list(tx.view.networks.all())
    name = spec.annotations.name
    if any(n.spec.annotations.name == name for n in existing):
        raise ControlError(StatusCode.ALREADY_EXISTS, f'network with name "{name}" already exists')
    current_ingress = ingress_of(existing) if spec.ingress else None
    if current_ingress is not None:
        raise ControlError(
            StatusCode.ALREADY_EXISTS,
            f'the swarm already has an ingress network ("{current_ingress.spec.annotations.name}")',
        )
    used = [
        (n.spec.annotations.name, netalloc.IPv4Net(n.allocated.subnet))
        for n in existing
        if n.allocated.subnet
    ]
    cluster = tx.cluster()
    try:
        if spec.ipam.subnet:
            subnet = netalloc.IPv4Net(spec.ipam.subnet)
            netalloc.check_subnet(subnet, used)
            gateway = spec.ipam.gateway
        else:
            pools = list(cluster.default_address_pool) if cluster is not None else []
            size = cluster.subnet_size if cluster is not None else 0
            subnet = netalloc.next_subnet(pools, size, [net for _, net in used])
            gateway = netalloc.gateway_for(subnet)
        vni = netalloc.next_vni(n.vni for n in existing)
    except netalloc.AllocationError as exc:
        raise _invalid(str(exc)) from None
    network = pb.Network(id=new_id(), spec=spec, vni=vni)
    network.allocated.subnet = str(subnet)
    network.allocated.gateway = gateway
    return network


def _in_use(services: list[pb.Service], network: pb.Network) -> bool:
    return bool(services_using(services, network))


def _row(network: pb.Network) -> dict[str, Any]:
    return {
        "ID": network.id,
        "Name": network.spec.annotations.name,
        "Driver": network.spec.driver or OVERLAY,
        "Scope": "swarm",
        "Labels": dict(network.spec.annotations.labels),
        "Ingress": network.spec.ingress,
        "Subnet": network.allocated.subnet,
        "CreatedAt": network.meta.created_at,
    }


class NetworkControl:
    """Handlers for the ``network.*`` control methods."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def handlers(self) -> dict[str, Handler]:
        """Its registered methods (``methods.py``), parsed and bound."""
        return methods.bind({methods.Owner.NETWORKS: self})

    def find(self, ref: str) -> pb.Network:
        if not ref:
            raise _invalid('a network ID or name is required, not ""')
        network = find(self.store.view.networks.all(), ref)
        if network is None:
            raise ControlError(StatusCode.NOT_FOUND, f"network {ref} not found")
        return network

    async def network_create(self, request: rq.Options) -> Any:
        spec = network_spec(request.options)
        created: list[pb.Network] = []

        def create(tx: Tx) -> None:
            network = allocate(tx, spec)
            tx.create(network)
            created.append(network)

        await self.store.update(create)
        return {"ID": created[0].id}

    async def network_ls(self, request: rq.NetworkList) -> Any:
        """Every network, or those ``--filter`` keeps (docker's network filters; ``dangling``
        needs the services, so the manager filters)."""
        networks = sorted(self.store.view.networks.all(), key=lambda n: n.spec.annotations.name)
        if request.filters:
            services = list(self.store.view.services.all()) if "dangling" in request.filters else []
            networks = [
                n
                for n in networks
                if listfilters.network_matches(n, functools.partial(_in_use, services, n), request.filters)
            ]
        return [_row(n) for n in networks]

    async def network_inspect(self, request: rq.NetworkRefs) -> Any:
        return [inspect_shape(self.find(ref)) for ref in request.refs]

    async def network_rm(self, request: rq.NetworkRefs) -> Any:
        networks = [self.find(ref) for ref in request.refs]

        def remove(tx: Tx) -> None:
            services = list(tx.view.services.all())
            for network in networks:
                users = services_using(services, network)
                if network.spec.ingress and users:
                    raise ControlError(
                        StatusCode.FAILED_PRECONDITION,
                        f"network {INGRESS_NAME} is in use by services that publish ingress ports: "
                        f"{', '.join(users)}; remove their ingress ports (--publish-rm) or the services first",
                    )
                if users:
                    raise ControlError(
                        StatusCode.FAILED_PRECONDITION,
                        f'network "{network.spec.annotations.name}" is in use by service(s) {", ".join(users)}: '
                        "detach them (service update --network-rm) or remove them first",
                    )
            for network in networks:
                tx.delete("network", network.id)

        await self.store.update(remove)
        return [n.spec.annotations.name for n in networks]
