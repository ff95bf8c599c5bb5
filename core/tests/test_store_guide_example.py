"""The store plugin guide's worked example passes the store conformance suite.

docs/plugin-guide/store.md walks a third party through a SQLite store; its provider module is
taken from the page as written (the first Python block of section 4) and run against
``shoal.testing.store.StoreConformance``, so the page cannot drift from the contract.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from shoal.roles.store import StoreProvider
from shoal.testing.store import StoreConformance

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugin-guide" / "store.md"


def _guide_module() -> types.ModuleType:
    text = GUIDE.read_text()
    section = text.split("## 4. The provider", 1)[1].split("## 5.", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"{GUIDE}: section 4 has no python block"
    module = types.ModuleType("shoal_store_sqlite_guide")
    exec(compile(match.group(1), str(GUIDE), "exec"), module.__dict__)
    return module


SqliteStore = _guide_module().SqliteStore


class TestGuideSqliteStore(StoreConformance):
    @pytest.fixture
    def store_factory(self) -> Callable[[Path], StoreProvider]:
        return lambda state_dir: SqliteStore(state_dir, "node-1", "127.0.0.1:2377")  # type: ignore[no-any-return]
