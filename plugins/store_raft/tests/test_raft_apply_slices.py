"""Committed entries are applied in slices with the event loop's other work between them
(issue 18): a backlog of thousands of changes applied in one callback held managers' loops for
seconds at 10,000 tasks, past the election timeout. Counted in loop turns, not time."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from shoal.testing.store import RecordingMachine
from shoal_store_raft import RaftStore
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.provider import APPLY_SLICE_BYTES


class TurnCountingMachine(RecordingMachine):
    """Records in which event-loop turn each entry was applied."""

    def __init__(self) -> None:
        super().__init__()
        self.turn = 0
        self.applied_in: Counter[int] = Counter()

    def apply(self, index: int, entry: bytes) -> None:
        super().apply(index, entry)
        self.applied_in[self.turn] += 1

    async def count_turns(self) -> None:
        while True:
            self.turn += 1
            await asyncio.sleep(0)


async def test_a_backlog_of_committed_entries_is_applied_a_slice_per_loop_turn(tmp_path: Path) -> None:
    machine = TurnCountingMachine()
    store = RaftStore(tmp_path, RaftOptions(tick_ms=60_000))  # no tick: only the proposals run
    await store.start(machine, bootstrap=True)
    counter = asyncio.ensure_future(machine.count_turns())
    try:
        entry_bytes = APPLY_SLICE_BYTES * 3 // 5  # two of them exceed a slice
        entries = [bytes([n]) * entry_bytes for n in range(8)]
        indexes = await asyncio.gather(*(store.propose(e) for e in entries))  # committed together
        assert [machine.state[i] for i in indexes] == entries
        assert machine.calls == sorted(machine.calls), "entries applied out of order"
        assert max(machine.applied_in.values()) == 1, f"entries applied per loop turn: {machine.applied_in}"
    finally:
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
        await store.stop()
    # A restart replays the whole log before ``start`` returns (the daemon reads the state next).
    replayed = RecordingMachine()
    reopened = RaftStore(tmp_path, RaftOptions(tick_ms=60_000))
    await reopened.start(replayed, bootstrap=False)
    try:
        assert [replayed.state.get(i) for i in indexes] == entries
    finally:
        await reopened.stop()
