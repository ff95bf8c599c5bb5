"""``FakeNetwork``: what the node was told to realise, kept in memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from shoal.plugin import (
    FEATURES,
    Backend,
    EndpointAttachment,
    NetworkError,
    NetworkSpec,
    NodeNetwork,
    PublishedPort,
    ServiceRecord,
)


class FakeNetwork:
    """Records the role's calls; answers ``resolve`` from the records it was given."""

    role: ClassVar[str] = "network"
    api_version: ClassVar[int] = 1
    features: ClassVar[frozenset[str]] = FEATURES

    def __init__(self) -> None:
        self.node: NodeNetwork | None = None
        self.peers: list[str] = []
        self.networks: dict[str, NetworkSpec] = {}
        self.endpoints: dict[tuple[str, str], EndpointAttachment] = {}
        self.published: dict[tuple[str, int], list[str]] = {}
        self.records: dict[str, list[ServiceRecord]] = {}

    async def start(self, node: NodeNetwork) -> None:
        self.node = node

    async def set_peers(self, peer_ips: Sequence[str]) -> None:
        self.peers = list(peer_ips)

    async def create_network(self, network: NetworkSpec) -> None:
        self.networks[network.network_id] = network

    async def remove_network(self, network_id: str) -> None:
        self.networks.pop(network_id, None)

    async def attach(self, attachment: EndpointAttachment) -> None:
        if attachment.network_id not in self.networks:
            raise NetworkError(f"network {attachment.network_id} was not created on this node")
        self.endpoints[(attachment.task_id, attachment.network_id)] = attachment

    async def detach(self, task_id: str, network_id: str) -> None:
        self.endpoints.pop((task_id, network_id), None)

    async def publish(self, port: PublishedPort, backends: Sequence[Backend]) -> None:
        self.published[(port.protocol, port.published)] = [backend.address for backend in backends]

    async def unpublish(self, protocol: str, published: int) -> None:
        self.published.pop((protocol, published), None)

    async def set_records(self, network_id: str, records: Sequence[ServiceRecord]) -> None:
        self.records[network_id] = list(records)

    async def resolve(self, network_id: str, name: str) -> list[str]:
        for record in self.records.get(network_id, []):
            if name == record.name:
                return [record.vip] if record.vip else list(record.task_addresses)
            if name == f"tasks.{record.name}":
                return list(record.task_addresses)
        return []

    async def cleanup(self) -> None:
        self.peers.clear()
        self.networks.clear()
        self.endpoints.clear()
        self.published.clear()
        self.records.clear()

    async def close(self) -> None:
        """Nothing to release."""
