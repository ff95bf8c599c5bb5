"""The namespace lab of the data-path tests (``shoal_network_overlay.testing``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from shoal_network_overlay.testing import Lab, make_lab


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """Hosts h1-h3 on a LAN and containers c1..cN (N: the test module's CONTAINERS, default 4),
    all removed at teardown."""
    made = make_lab(getattr(request.module, "CONTAINERS", 4))
    try:
        yield made
    finally:
        made.remove()
