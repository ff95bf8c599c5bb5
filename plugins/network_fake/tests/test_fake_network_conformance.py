"""The network conformance suite (the part every provider must pass) against the fake."""

from __future__ import annotations

import pytest
from shoal.testing.network import NetworkConformance
from shoal_network_fake import FakeNetwork


class TestFakeNetworkConformance(NetworkConformance):
    declared_features = frozenset({"overlay", "ingress", "discovery"})

    @pytest.fixture
    def network(self) -> FakeNetwork:
        return FakeNetwork()
