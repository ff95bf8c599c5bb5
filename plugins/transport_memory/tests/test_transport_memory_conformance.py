"""The memory transport passes the transport conformance suite (real certificates, no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from shoal.testing.transport import TransportConformance
from shoal_transport_memory import MemoryNetwork, MemoryTransport


class TestMemoryTransportConformance(TransportConformance):
    @pytest.fixture
    async def transport(self) -> AsyncIterator[MemoryTransport]:
        provider = MemoryTransport(network=MemoryNetwork(seed=1))
        yield provider
        await provider.close()


class TestMemoryTransportConformanceOnTheDefaultNetwork(TransportConformance):
    """The plugin's own network (what the entry point builds), on host names that do not resolve."""

    @pytest.fixture
    def listen_addr(self) -> str:
        return "manager-1.sim:0"

    @pytest.fixture
    async def transport(self) -> AsyncIterator[MemoryTransport]:
        provider = MemoryTransport()
        yield provider
        await provider.close()
