"""Cancelling a task at a chosen loop turn: the race in which ``asyncio.wait_for`` on Python
3.11 swallows a cancellation (its inner wait completes as the cancellation arrives), which tests
drive turn by turn to show that a cancelled caller ends cancelled."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_after_turns(task: asyncio.Task[Any], turns: int, within: float = 2.0) -> bool:
    """Let the loop run ``turns`` turns, cancel ``task``, and wait up to ``within`` seconds for it
    to end; whether it ended (then ``task.cancelled()`` says whether the cancellation held)."""
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=within)
    return bool(done)
