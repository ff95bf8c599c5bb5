"""A real ``cfssl serve`` (Debian's golang-cfssl) per test, behind mutual TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from shoal_ca_cfssl.testing import CfsslServer


@pytest.fixture
def cfssl_server(tmp_path: Path) -> Iterator[CfsslServer]:
    """cfssl with its own CA, serving TLS for 127.0.0.1, admitting only clients of that CA."""
    server = CfsslServer(tmp_path / "cfssl").start()
    yield server
    server.stop()
