"""The manager's port allocator: ingress published ports are unique in the swarm.

Runs inside the control API's store transaction, so two services created at once never get the
same port (transactions run one at a time). Like Swarm's port allocator it only accounts for
ingress ports: host-mode ports are bound by the engine where a task runs, and the scheduler's
host-port filter keeps them one task per node per port. A port given by the user must be free
in the swarm; a missing one is the lowest free port of 30000-32767. A service keeps a port it
was given before (an update that leaves a port without a number keeps its old allocation).

It also refuses what the swarm's network plugin cannot realise yet: an ingress port needs a
plugin that declares the ``ingress`` feature (``shoal.roles.network``).
"""

from __future__ import annotations

import functools

from shoal import loader
from shoal.ports import protocol_name
from shoal.proto import objects_pb2 as pb
from shoal.roles.network import FEATURE_INGRESS
from shoal.store.memory import Tx

#: Swarm's dynamic range for ingress ports given without a number (swarmkit portallocator).
DYNAMIC_FIRST = 30000
DYNAMIC_LAST = 32767


class PortError(ValueError):
    """A port cannot be published; the message is one line for the user."""


@functools.cache
def network_features(plugin: str) -> frozenset[str]:
    """The ``features`` the named network plugin declares (empty if it is not installed here
    or broken: what needs a feature is then refused rather than silently not realised)."""
    for declared in loader.declared_plugins("network"):
        if declared.name == plugin and declared.provider_class is not None:
            features: object = getattr(declared.provider_class, "features", frozenset())
            return frozenset(features) if isinstance(features, frozenset) else frozenset()
    return frozenset()


def swarm_network_plugin(tx: Tx) -> str:
    cluster = tx.cluster()
    chosen = cluster.plugins.network if cluster is not None else ""
    return chosen or loader.DEFAULT_SELECTION["network"]


def check_ingress_available(tx: Tx, spec: pb.EndpointSpec) -> None:
    """Refuse ingress ports when the swarm's network plugin has no routing mesh."""
    ingress = [p for p in spec.ports if p.publish_mode == pb.PortConfig.INGRESS]
    if not ingress:
        return
    plugin = swarm_network_plugin(tx)
    if FEATURE_INGRESS in network_features(plugin):
        return
    port = ingress[0]
    published = port.published_port or DYNAMIC_FIRST
    raise PortError(
        f"ingress publishing (the routing mesh) is not available with this swarm's network plugin "
        f'"{plugin}" yet: publish in host mode, e.g. --publish published={published},'
        f"target={port.target_port},protocol={protocol_name(port)},mode=host"
    )


def _owners(tx: Tx, service_id: str) -> dict[tuple[int, int], str]:
    """(protocol, port) -> name of the other service holding it."""
    owners: dict[tuple[int, int], str] = {}
    for service in tx.view.services.all():
        if service.id == service_id:
            continue
        for port in service.endpoint.ports:
            if port.publish_mode == pb.PortConfig.INGRESS and port.published_port:
                owners[(port.protocol, port.published_port)] = service.spec.annotations.name
    return owners


def allocate(tx: Tx, service_id: str, spec: pb.EndpointSpec) -> pb.Endpoint:
    """The service's endpoint for ``spec``: every ingress port with its published number.

    Raises ``PortError`` (nothing is stored) for a port another service publishes or when the
    dynamic range is exhausted.
    """
    check_ingress_available(tx, spec)
    owners = _owners(tx, service_id)
    current = tx.service(service_id)
    previous = list(current.endpoint.ports) if current is not None else []
    endpoint = pb.Endpoint(spec=spec)
    taken = set(owners)
    for port in spec.ports:
        if port.publish_mode == pb.PortConfig.INGRESS and port.published_port:
            key = (port.protocol, port.published_port)
            if key in owners:
                raise PortError(
                    f"port {port.published_port}/{protocol_name(port)} is already published by service "
                    f'"{owners[key]}": choose another published port or remove it from that service'
                )
            taken.add(key)
    allocated = [_copy(port) for port in spec.ports]
    dynamic = [p for p in allocated if p.publish_mode == pb.PortConfig.INGRESS and not p.published_port]
    for port in dynamic:  # first keep what this service was given before, then fill the rest
        port.published_port = _kept(port, previous, taken)
        if port.published_port:
            taken.add((port.protocol, port.published_port))
    for port in dynamic:
        if not port.published_port:
            port.published_port = _lowest_free(port, taken)
            taken.add((port.protocol, port.published_port))
    endpoint.ports.extend(allocated)
    return endpoint


def _copy(port: pb.PortConfig) -> pb.PortConfig:
    copied = pb.PortConfig()
    copied.CopyFrom(port)
    return copied


def _kept(port: pb.PortConfig, previous: list[pb.PortConfig], taken: set[tuple[int, int]]) -> int:
    """The number this service had for the same target and protocol, if still free (else 0)."""
    for old in previous:
        same = old.target_port == port.target_port and old.protocol == port.protocol
        if same and old.publish_mode == pb.PortConfig.INGRESS and old.published_port:
            if (old.protocol, old.published_port) not in taken:
                return int(old.published_port)
    return 0


def _lowest_free(port: pb.PortConfig, taken: set[tuple[int, int]]) -> int:
    for number in range(DYNAMIC_FIRST, DYNAMIC_LAST + 1):
        if (port.protocol, number) not in taken:
            return number
    raise PortError(
        f"no free published port left in {DYNAMIC_FIRST}-{DYNAMIC_LAST} for target port "
        f"{port.target_port}/{protocol_name(port)}: "
        "give one with published=PORT or remove services that publish ports"
    )
