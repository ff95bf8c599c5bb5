"""Determinism shims: the provider's clock and member IDs, taken from the simulation.

``RaftStore`` and ``StoreNetwork`` read ``time.monotonic()`` for deadlines (``add_member``'s
catch-up, ``transfer_leadership``'s timeout, ``_conf_change``'s retry window) and for
reachability. On a ``VirtualTimeLoop`` the loop's clock is virtual, so a loop waiting on a
real-time deadline would run for as many virtual ticks as fit in the wall time: nondeterministic
and slow. While a simulation runs, both modules see a ``time`` whose ``monotonic`` is the loop's
clock. Member IDs come from ``secrets`` in the provider; here they come from the seed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import shoal.manager.storenet as storenet_module
import shoal_store_raft.provider as provider_module


class LoopClock:
    """Looks like the ``time`` module, with ``monotonic`` following one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.time()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextmanager
def simulated_clock_and_ids(loop: asyncio.AbstractEventLoop, rng: random.Random) -> Iterator[None]:
    """Patch the provider and store network modules for the duration of one simulation."""
    saved = (
        getattr(provider_module, "time"),  # noqa: B009 - not re-exported, mypy would refuse
        getattr(storenet_module, "time"),  # noqa: B009
        provider_module.new_raft_id,
    )
    clock = LoopClock(loop)
    setattr(provider_module, "time", clock)  # noqa: B010 - a module attribute, on purpose
    setattr(storenet_module, "time", clock)  # noqa: B010
    setattr(provider_module, "new_raft_id", lambda: rng.getrandbits(63) or 1)  # noqa: B010
    try:
        yield
    finally:
        setattr(provider_module, "time", saved[0])  # noqa: B010
        setattr(storenet_module, "time", saved[1])  # noqa: B010
        setattr(provider_module, "new_raft_id", saved[2])  # noqa: B010
