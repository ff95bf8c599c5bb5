"""A transaction that allocates network addresses is freed when it ends, not by the collector.

``Allocations.of(tx)`` keeps the transaction's allocations on the transaction, and they held
the transaction back: a reference cycle, so every transaction of the scheduler (each of up to
500 task versions) waited for a garbage collection to be freed. At 100,000 tasks on 1,000
hollow nodes a manager's collector pass found 110,000-495,000 such objects at a time, frozen
meanwhile by the collector policy (``shoal.gcpolicy``), each pass 0.3-1 s of a held loop."""

from __future__ import annotations

import gc
import weakref

from shoal.manager.netobjects import Allocations
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import Tx
from shoal.testing.objectstore import instant_store


async def test_a_transaction_with_allocations_is_freed_without_the_collector() -> None:
    store = await instant_store()
    ended: list[weakref.ref[Tx]] = []

    def allocate(tx: Tx) -> None:
        Allocations.of(tx)  # what the scheduler's and the dispatcher's writes do
        tx.create(pb.Task(id="t1", service_id="s1"))
        ended.append(weakref.ref(tx))

    gc.disable()
    try:
        await store.update(allocate)
        assert ended[0]() is None, "the transaction is kept alive by a reference cycle"
    finally:
        gc.enable()
