"""Long work on a shared event loop, a bounded piece at a time.

A manager's loop also runs Raft's ticks, the dispatcher's heartbeats and every session: a pass
over 100,000 tasks in one go held it for a second or more (elections, sessions lost). Each such
pass (taking in a burst of store events, a new leader's start check, grouping pending tasks,
building or encoding a 100,000-row listing) goes through ``in_pieces`` instead, which yields the
loop between pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

T = TypeVar("T")


async def in_pieces(items: Sequence[T], size: int) -> AsyncIterator[Sequence[T]]:
    """``items`` in consecutive slices of ``size``, the loop running other work between two."""
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + size]
