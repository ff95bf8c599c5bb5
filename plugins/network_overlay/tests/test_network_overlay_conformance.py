"""The overlay network plugin passes the kernel's network conformance suite, run in a network
namespace the fixture makes (the host's own networking is never touched)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest
from shoal.testing.network import NetworkConformance
from shoal_network_overlay import OverlayNetwork


class TestOverlayConformance(NetworkConformance):
    declared_features = frozenset({"overlay", "ingress", "discovery"})

    @pytest.fixture
    def network(self) -> Iterator[OverlayNetwork]:
        name = f"shoal-conf-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        try:
            yield OverlayNetwork(netns=f"/run/netns/{name}")
        finally:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
