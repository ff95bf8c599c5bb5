"""The network role: realise on this node what the managers allocated for the swarm's networks.

The managers decide everything that must be unique cluster-wide (a network's subnet and VXLAN
ID, one address per task per network, one virtual IP per service per network, every ingress
published port) and store it in the objects; each node's network provider only *realises* it
locally: the overlay network's devices, a task's endpoint in its container, the ingress port
forwarding and the names a task can resolve. The kernel calls these methods from the agent;
a provider never reads the store and never allocates.

A provider declares in ``features`` which parts of the contract it implements (a plugin may
grow them over several releases); the kernel refuses what needs a missing feature at the
control API (for example ingress publishing), and the methods of a feature it does not
declare raise ``NetworkError``. ``start``, ``cleanup`` and ``close`` exist in every provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

#: Overlay networks: ``create_network``, ``remove_network``, ``set_peers``, ``attach``, ``detach``.
FEATURE_OVERLAY = "overlay"
#: The routing mesh: ``publish``, ``unpublish`` (mode=ingress published ports on every node).
FEATURE_INGRESS = "ingress"
#: Service discovery: ``set_records``, ``resolve`` (``NAME``, ``tasks.NAME`` per network).
FEATURE_DISCOVERY = "discovery"
FEATURES = frozenset({FEATURE_OVERLAY, FEATURE_INGRESS, FEATURE_DISCOVERY})


class NetworkError(Exception):
    """An operation failed; the message is one line naming what and why.

    ``temporary`` errors (a device busy, the kernel answering EAGAIN) are retried by the caller;
    others fail the task or the request that needed them.
    """

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class NodeNetwork:
    """This node as the network sees it: the address other nodes reach it on (the underlay,
    where VXLAN and forwarded ingress connections arrive) and where it listens for ingress."""

    node_id: str
    advertise_ip: str


@dataclass(frozen=True)
class NetworkSpec:
    """One overlay network as the managers allocated it. ``subnet`` is a CIDR (``10.0.1.0/24``),
    ``gateway`` its first address, ``vni`` the VXLAN network identifier (unique in the swarm).

    ``ingress`` marks the routing mesh's network (exactly one in a swarm, named ``ingress``):
    published ports forward their connections into it. ``host_address`` (CIDR form,
    ``10.0.0.2/24``) is this node's own address on that network, allocated by the managers: the
    provider gives it to the node's side of the network and rewrites the source of forwarded
    ingress connections to it (so replies come back through the node that received the
    connection). Empty for every other network."""

    network_id: str
    name: str
    subnet: str
    gateway: str
    vni: int
    options: dict[str, str] = field(default_factory=dict)
    ingress: bool = False
    host_address: str = ""


@dataclass(frozen=True)
class EndpointAttachment:
    """A task's endpoint on one network: its address (CIDR form, ``10.0.1.5/24``), the names
    it answers to on the network, and the network namespace of its container (a path such as
    ``/proc/<pid>/ns/net``, from the runtime's ``ContainerRef.pid``)."""

    task_id: str
    network_id: str
    address: str
    aliases: tuple[str, ...]
    sandbox: str


@dataclass(frozen=True)
class PublishedPort:
    """An ingress published port: connections to ``published`` on any node go to ``target`` on
    one of the backends. ``protocol`` is ``tcp`` or ``udp``."""

    service_id: str
    protocol: str
    published: int
    target: int


@dataclass(frozen=True)
class Backend:
    """A running task that may receive a published port's connections: its address (plain
    IPv4) on the ingress network, reached through the node's side of that network."""

    task_id: str
    address: str


@dataclass(frozen=True)
class ServiceRecord:
    """What discovery answers on one network for one service: ``NAME`` gives ``vip`` (or the
    task addresses when ``vip`` is empty: ``--endpoint-mode dnsrr``); ``tasks.NAME`` gives
    ``task_addresses``."""

    name: str
    vip: str
    task_addresses: tuple[str, ...]


@runtime_checkable
class NetworkProvider(Protocol):
    """Realises the swarm's networks on one node."""

    role: ClassVar[str]  # "network"
    api_version: ClassVar[int]  # 1
    #: The parts of the contract this provider implements: a subset of ``FEATURES``.
    features: ClassVar[frozenset[str]]

    async def start(self, node: NodeNetwork) -> None:
        """Prepare the node (its own nftables table, the ingress sandbox...) and adopt what an
        earlier run left, so a restarted daemon does not cut its tasks' connections. Idempotent.
        Must never touch the host's other devices, routes or rules."""

    async def set_peers(self, peer_ips: Sequence[str]) -> None:
        """The other nodes' underlay addresses (VXLAN flooding list). Replaces the previous list."""

    async def create_network(self, network: NetworkSpec) -> None:
        """Create ``network``'s local part (bridge, VXLAN device). Idempotent; called when the
        first task that needs it arrives on this node."""

    async def remove_network(self, network_id: str) -> None:
        """Remove the network's local part once no task here uses it. Missing is fine."""

    async def attach(self, attachment: EndpointAttachment) -> None:
        """Give a task's container its endpoint on a network (interface, address, routes).
        Idempotent for the same task and network.

        With ``discovery``: once this returns, the container resolves names through the
        provider's resolver at ``127.0.0.11:53`` inside its namespace, which answers the records
        of the networks the container is attached to and forwards other names to the host's
        resolvers (the runtime writes ``nameserver 127.0.0.11`` into the container's
        resolv.conf). Connections to a service's VIP on those networks spread over its tasks."""

    async def detach(self, task_id: str, network_id: str) -> None:
        """Remove a task's endpoint. Missing is fine (the container may already be gone)."""

    async def publish(self, port: PublishedPort, backends: Sequence[Backend]) -> None:
        """Accept ``port`` on this node and spread its new connections over ``backends``
        (replacing the previous set; an empty set refuses connections). Called again within a
        second of any backend change; existing connections to a live backend are kept."""

    async def unpublish(self, protocol: str, published: int) -> None:
        """Stop accepting a published port. Missing is fine."""

    async def set_records(self, network_id: str, records: Sequence[ServiceRecord]) -> None:
        """Replace what discovery answers to tasks on ``network_id``, and the VIP load balancing
        of every local endpoint on that network (new connections to ``vip`` spread over
        ``task_addresses``). Records of a network not created here are kept for when it is."""

    async def resolve(self, network_id: str, name: str) -> list[str]:
        """The addresses a task on ``network_id`` gets for ``name`` (``[]`` when unknown there):
        what the resolver inside the container answers, for tests and ``network inspect``."""

    async def cleanup(self) -> None:
        """Remove everything this provider created on the node: devices, namespaces, rules.
        Called when the node leaves the swarm or is removed; idempotent."""

    async def close(self) -> None:
        """Release handles and tasks. Leaves the data path in place (a restart adopts it)."""


__all__ = [
    "FEATURES",
    "FEATURE_DISCOVERY",
    "FEATURE_INGRESS",
    "FEATURE_OVERLAY",
    "Backend",
    "EndpointAttachment",
    "NetworkError",
    "NetworkProvider",
    "NetworkSpec",
    "NodeNetwork",
    "PublishedPort",
    "ServiceRecord",
]
