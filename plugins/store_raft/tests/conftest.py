"""Options for the Raft simulation tests, and the path that makes ``raftsim`` importable.

``--raft-seed N`` replays one simulation seed (the command a failing seed prints);
``--raft-seeds N`` changes how many seeds the sweep runs (CI: 2,000; a soak: more).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("raft simulation")
    group.addoption("--raft-seed", type=int, default=None, help="run only this raft simulation seed")
    group.addoption(
        "--raft-seeds", type=int, default=2000, help="number of raft simulation seeds (default 2000)"
    )
    group.addoption("--raft-seed-start", type=int, default=0, help="first raft simulation seed of the sweep")
    memsim = parser.getgroup("raft memnet simulation (test_raft_memnet_sim.py)")
    memsim.addoption("--memsim-seed", type=int, default=None, help="run only this memnet simulation seed")
    memsim.addoption(
        "--memsim-seeds", type=int, default=200, help="number of memnet simulation seeds (default 200)"
    )
    memsim.addoption("--memsim-seed-start", type=int, default=0, help="first memnet simulation seed")
