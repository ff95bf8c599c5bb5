"""The overlay network provider: what this release realises of the network contract.

Every feature method checks the declaration first, so a kernel (or a test) that calls a part
this release does not implement gets one ``NetworkError`` line instead of a half-made network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from shoal.plugin import (
    FEATURE_DISCOVERY,
    FEATURE_INGRESS,
    FEATURE_OVERLAY,
    Backend,
    EndpointAttachment,
    NetworkError,
    NetworkSpec,
    NodeNetwork,
    PublishedPort,
    ServiceRecord,
)


def _unavailable(feature: str) -> NetworkError:
    return NetworkError(
        f"the overlay network plugin does not implement {feature} yet "
        "(publish ports with mode=host meanwhile)"
    )


class OverlayNetwork:
    """Realises the swarm's networks on one node (see the package docstring for the design)."""

    role: ClassVar[str] = "network"
    api_version: ClassVar[int] = 1
    features: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self.node: NodeNetwork | None = None

    async def start(self, node: NodeNetwork) -> None:
        """Nothing to prepare while no feature is implemented: remember the node."""
        self.node = node

    async def set_peers(self, peer_ips: Sequence[str]) -> None:
        raise _unavailable(FEATURE_OVERLAY)

    async def create_network(self, network: NetworkSpec) -> None:
        raise _unavailable(FEATURE_OVERLAY)

    async def remove_network(self, network_id: str) -> None:
        raise _unavailable(FEATURE_OVERLAY)

    async def attach(self, attachment: EndpointAttachment) -> None:
        raise _unavailable(FEATURE_OVERLAY)

    async def detach(self, task_id: str, network_id: str) -> None:
        raise _unavailable(FEATURE_OVERLAY)

    async def publish(self, port: PublishedPort, backends: Sequence[Backend]) -> None:
        raise _unavailable(FEATURE_INGRESS)

    async def unpublish(self, protocol: str, published: int) -> None:
        raise _unavailable(FEATURE_INGRESS)

    async def set_records(self, network_id: str, records: Sequence[ServiceRecord]) -> None:
        raise _unavailable(FEATURE_DISCOVERY)

    async def resolve(self, network_id: str, name: str) -> list[str]:
        raise _unavailable(FEATURE_DISCOVERY)

    async def cleanup(self) -> None:
        """Nothing was created on the host, so nothing is left to remove."""

    async def close(self) -> None:
        self.node = None
