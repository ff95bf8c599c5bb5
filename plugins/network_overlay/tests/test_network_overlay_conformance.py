"""The overlay network plugin passes the kernel's network conformance suite."""

from __future__ import annotations

import pytest
from shoal.testing.network import NetworkConformance
from shoal_network_overlay import OverlayNetwork


class TestOverlayConformance(NetworkConformance):
    @pytest.fixture
    def network(self) -> OverlayNetwork:
        return OverlayNetwork()
