"""Conformance suite for store providers.

Use it from your plugin's tests::

    import pytest
    from shoal.testing.store import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_factory(self):
            return lambda state_dir: MyStore(state_dir)

``store_factory`` returns a callable that builds a *new, unstarted* provider over a state
directory; the suite calls it again with the same directory to check what survives a restart.
Every test then runs against your provider. They check the contract of
``shoal.roles.StoreProvider`` (API 3) for a single bootstrapped member: it leads at once and
says so through ``is_leader``, ``leadership``, ``leader`` and ``members`` (one voter, the
leader, reachable), ``propose`` returns increasing indexes only after ``apply`` ran for them,
``apply`` sees each index once and in order, a restart restores and replays every acknowledged
entry, reopening a directory without state fails, a stopped store refuses proposals with
``StoreUnavailable`` and no longer leads, its own RPC methods are named under
``STORE_PEER_METHOD_PREFIX``, and ``tune`` ignores settings it has no use for.

The tests are plain functions that run their own event loop (no pytest-asyncio needed).
``RecordingMachine`` is public: use it in your own tests.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shoal.roles.base import API_VERSIONS
from shoal.roles.store import STORE_PEER_METHOD_PREFIX, StateMachine, StoreProvider, StoreUnavailable

StoreFactory = Callable[[Path], StoreProvider]
T = TypeVar("T")

#: Per-test deadline: a store that hangs must fail the test, not the run.
DEADLINE_SECONDS = 60.0

_REC = struct.Struct("<QI")


class RecordingMachine:
    """A ``StateMachine`` that keeps every applied entry by index and logs each call.

    ``calls`` lists the indexes ``apply`` was called with, in order, since the last restore;
    ``restored_at`` is the index of the last ``restore`` (None if never restored).
    """

    def __init__(self) -> None:
        self.state: dict[int, bytes] = {}
        self.calls: list[int] = []
        self.restored_at: int | None = None

    def apply(self, index: int, entry: bytes) -> None:
        self.calls.append(index)
        self.state[index] = entry

    def snapshot(self) -> bytes:
        return b"".join(_REC.pack(i, len(d)) + d for i, d in sorted(self.state.items()))

    def restore(self, index: int, data: bytes) -> None:
        state: dict[int, bytes] = {}
        off = 0
        while off < len(data):
            i, size = _REC.unpack_from(data, off)
            off += _REC.size
            state[i] = data[off : off + size]
            off += size
        self.state = state
        self.calls = []
        self.restored_at = index


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one test body in a fresh event loop, under ``DEADLINE_SECONDS``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, DEADLINE_SECONDS)

    return asyncio.run(bounded())


async def _started(
    factory: StoreFactory, state_dir: Path, machine: StateMachine, bootstrap: bool
) -> StoreProvider:
    store = factory(state_dir)
    await store.start(machine, bootstrap=bootstrap)
    return store


async def _stopping(store: StoreProvider, body: Awaitable[T]) -> T:
    try:
        return await body
    finally:
        await store.stop()


class StoreConformance:
    """Subclass and override ``store_factory``; see the module docstring."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        pytest.fail("override the store_factory fixture: return a callable (state_dir) -> StoreProvider")

    @pytest.fixture
    def state_dir(self, tmp_path: Path) -> Path:
        path = tmp_path / "store-state"
        path.mkdir()
        return path

    # ------------------------------------------------------------------ declaration

    def test_declares_store_role_and_api_version(self, store_factory: StoreFactory, state_dir: Path) -> None:
        store = store_factory(state_dir)
        assert isinstance(store, StoreProvider)
        assert type(store).role == "store"
        assert type(store).api_version == API_VERSIONS["store"]

    # ------------------------------------------------------------------ leadership

    def test_bootstrapped_single_member_leads_at_once(
        self, store_factory: StoreFactory, state_dir: Path
    ) -> None:
        async def body() -> None:
            store = await _started(store_factory, state_dir, RecordingMachine(), True)

            async def check() -> None:
                assert store.is_leader()
                events = store.leadership()
                first = await anext(events)
                assert first is True
                await events.aclose()  # type: ignore[attr-defined]

            await _stopping(store, check())

        run(body())

    def test_single_member_is_the_whole_group_and_its_leader(
        self, store_factory: StoreFactory, state_dir: Path
    ) -> None:
        async def body() -> None:
            store = await _started(store_factory, state_dir, RecordingMachine(), True)

            async def check() -> None:
                members = store.members()
                assert len(members) == 1, members
                (me,) = members
                assert me.voter and me.leader and me.reachable, me
                leader = store.leader()
                assert leader is not None and leader.leader, leader
                assert leader.node_id == me.node_id and leader.store_id == me.store_id

            await _stopping(store, check())

        run(body())

    def test_own_rpc_methods_are_named_under_the_store_prefix(
        self, store_factory: StoreFactory, state_dir: Path
    ) -> None:
        async def body() -> None:
            store = await _started(store_factory, state_dir, RecordingMachine(), True)

            async def check() -> None:
                unary, streams = store.rpc_handlers()
                for name in [*unary, *streams]:
                    assert name.startswith(STORE_PEER_METHOD_PREFIX), (
                        f"{name}: a store's own RPC methods must be named under {STORE_PEER_METHOD_PREFIX}"
                    )

            await _stopping(store, check())

        run(body())

    def test_tune_ignores_settings_it_does_not_know(
        self, store_factory: StoreFactory, state_dir: Path
    ) -> None:
        async def body() -> None:
            store = await _started(store_factory, state_dir, RecordingMachine(), True)

            async def check() -> None:
                store.tune({})
                store.tune({"no_such_setting": 1})
                assert await store.propose(b"after-tune") >= 1

            await _stopping(store, check())

        run(body())

    # ------------------------------------------------------------------ proposals

    def test_propose_returns_increasing_indexes(self, store_factory: StoreFactory, state_dir: Path) -> None:
        async def body() -> None:
            store = await _started(store_factory, state_dir, RecordingMachine(), True)

            async def check() -> None:
                indexes = [await store.propose(b"entry-%d" % n) for n in range(25)]
                assert indexes == sorted(set(indexes)), indexes
                assert indexes[0] >= 1

            await _stopping(store, check())

        run(body())

    def test_apply_runs_once_per_index_in_order_before_propose_returns(
        self, store_factory: StoreFactory, state_dir: Path
    ) -> None:
        async def body() -> None:
            machine = RecordingMachine()
            store = await _started(store_factory, state_dir, machine, True)

            async def check() -> None:
                for n in range(25):
                    entry = b"value-%d" % n
                    index = await store.propose(entry)
                    assert machine.state.get(index) == entry, (
                        f"apply({index}) had not run when propose returned"
                    )
                assert machine.calls == sorted(set(machine.calls)), f"apply order/duplicates: {machine.calls}"

            await _stopping(store, check())

        run(body())

    def test_concurrent_proposals_each_get_their_own_index(
        self, store_factory: StoreFactory, state_dir: Path
    ) -> None:
        async def body() -> None:
            machine = RecordingMachine()
            store = await _started(store_factory, state_dir, machine, True)

            async def check() -> None:
                entries = [b"concurrent-%d" % n for n in range(64)]
                indexes = await asyncio.gather(*(store.propose(e) for e in entries))
                assert len(set(indexes)) == len(entries)
                for entry, index in zip(entries, indexes, strict=True):
                    assert machine.state[index] == entry
                assert machine.calls == sorted(set(machine.calls))

            await _stopping(store, check())

        run(body())

    # ------------------------------------------------------------------ durability

    def test_restart_restores_every_acknowledged_entry(
        self, store_factory: StoreFactory, state_dir: Path
    ) -> None:
        async def body() -> None:
            first = RecordingMachine()
            store = await _started(store_factory, state_dir, first, True)
            acked: dict[int, bytes] = {}

            async def write() -> None:
                for n in range(40):
                    entry = b"durable-%d" % n
                    acked[await store.propose(entry)] = entry
                acked[await store.propose(b"x" * (1 << 20))] = b"x" * (1 << 20)  # a large one too

            await _stopping(store, write())

            second = RecordingMachine()
            reopened = await _started(store_factory, state_dir, second, False)

            async def check() -> None:
                for index, entry in acked.items():
                    assert second.state.get(index) == entry, f"entry {index} lost across restart"
                after = second.restored_at or 0
                assert all(i > after for i in second.calls), "replayed an index covered by the snapshot"
                assert second.calls == sorted(set(second.calls))
                assert reopened.is_leader()
                assert await reopened.propose(b"after-restart") > max(acked)

            await _stopping(reopened, check())

        run(body())

    def test_reopen_without_state_fails_clearly(self, store_factory: StoreFactory, state_dir: Path) -> None:
        async def body() -> None:
            store = store_factory(state_dir)
            with pytest.raises(Exception) as info:
                await store.start(RecordingMachine(), bootstrap=False)
            assert str(info.value).strip(), "the error must say what is wrong"

        run(body())

    # ------------------------------------------------------------------ stopping

    def test_propose_after_stop_raises_store_unavailable(
        self, store_factory: StoreFactory, state_dir: Path
    ) -> None:
        async def body() -> None:
            store = await _started(store_factory, state_dir, RecordingMachine(), True)
            await store.propose(b"before")
            await store.stop()
            with pytest.raises(StoreUnavailable) as info:
                await store.propose(b"after")
            assert str(info.value).strip()
            assert not store.is_leader()
            assert store.leader() is None or not store.is_leader()

        run(body())

    def test_status_is_a_dict(self, store_factory: StoreFactory, state_dir: Path) -> None:
        async def body() -> None:
            store = await _started(store_factory, state_dir, RecordingMachine(), True)

            async def check() -> None:
                await store.propose(b"one")
                status = store.status()
                assert isinstance(status, dict) and status

            await _stopping(store, check())

        run(body())
