"""The gRPC transport passes the transport conformance suite (real TLS on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from shoal.testing.transport import TransportConformance
from shoal_transport_grpc import GrpcTransport


class TestGrpcTransportConformance(TransportConformance):
    @pytest.fixture
    async def transport(self) -> AsyncIterator[GrpcTransport]:
        provider = GrpcTransport()
        yield provider
        await provider.close()


class TestGrpcTransportServingThreadConformance(TransportConformance):
    """The same contract with ``transport.serving-thread=on`` (gRPC on a thread of its own)."""

    @pytest.fixture
    async def transport(self) -> AsyncIterator[GrpcTransport]:
        provider = GrpcTransport(serving_thread=True)
        yield provider
        await provider.close()
