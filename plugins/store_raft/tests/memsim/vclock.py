"""Determinism shim: member IDs taken from the simulation's seed.

``RaftStore`` and ``StoreNetwork`` read the event loop's clock for deadlines and reachability,
so on a ``VirtualTimeLoop`` they follow virtual time without help. Member IDs come from
``secrets`` in the provider; while a simulation runs they come from the seed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager

import shoal_store_raft.provider as provider_module


@contextmanager
def simulated_clock_and_ids(loop: asyncio.AbstractEventLoop, rng: random.Random) -> Iterator[None]:
    """Patch the provider's member-ID source for the duration of one simulation."""
    del loop  # the clock needs no patch: the provider and network use the loop's time
    saved = provider_module.new_raft_id
    setattr(provider_module, "new_raft_id", lambda: rng.getrandbits(63) or 1)  # noqa: B010
    try:
        yield
    finally:
        setattr(provider_module, "new_raft_id", saved)  # noqa: B010
