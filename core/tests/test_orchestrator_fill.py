"""A large service is filled up in pieces without scanning all its tasks for each piece
(issue 18): 100,000 replicas were 200 pieces of 500, each scanning every task of the service
and checking every slot for a rolling update: 85 s of the leader's loop, now 6 s."""

from __future__ import annotations

import pytest
from shoal.manager import orchestrator
from shoal.manager.orchestrator import ReplicatedOrchestrator
from shoal.proto import objects_pb2 as pb
from shoal.store import memory
from shoal.testing.objectstore import instant_store

REPLICAS = 3000


def _service(replicas: int) -> pb.Service:
    service = pb.Service(id="s1")
    service.spec.annotations.name = "web"
    service.spec.replicated.replicas = replicas
    service.spec.task.container.image = "app:1"
    return service


async def test_pieces_of_a_large_service_do_not_rescan_its_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    store = await instant_store()
    await store.update(lambda tx: tx.create(_service(REPLICAS)))
    scanned = [0]
    for view_class in (memory.ReadView, memory._OverlayView):
        real = view_class.service_tasks

        def counted(self: object, service_id: str, real: object = real) -> list[pb.Task]:
            tasks: list[pb.Task] = real(self, service_id)  # type: ignore[operator]
            scanned[0] += len(tasks)
            return tasks

        monkeypatch.setattr(view_class, "service_tasks", counted)
    orch = ReplicatedOrchestrator(store)
    orch._dirty.add("s1")
    await orch._process()
    tasks = list(store.view.tasks.all())
    assert len(tasks) == REPLICAS and sorted(t.slot for t in tasks) == list(range(1, REPLICAS + 1))
    assert REPLICAS > orchestrator.MAX_CREATES_PER_COMMIT  # it took several pieces
    assert scanned[0] < REPLICAS, f"{scanned[0]} tasks scanned to create {REPLICAS}"


async def test_a_service_changed_while_being_filled_is_reconciled_whole() -> None:
    """Scaled down between two pieces: the pieces stop at the new count."""
    store = await instant_store()
    await store.update(lambda tx: tx.create(_service(REPLICAS)))
    orch = ReplicatedOrchestrator(store)
    orch._dirty.add("s1")
    real_fill = orch._continue_filling
    scaled = [False]

    def scale_first(tx: memory.Tx, service_id: str) -> None:
        if not scaled[0]:  # as if `service scale web=700` committed just before this piece
            scaled[0] = True
            service = memory.copy(tx.service(service_id))  # type: ignore[type-var]
            service.spec.replicated.replicas = 700
            service.meta.version += 1
            tx.update(service)
        real_fill(tx, service_id)

    orch._continue_filling = scale_first  # type: ignore[method-assign]
    await orch._process()
    live = [t for t in store.view.tasks.all() if t.desired_state <= pb.RUNNING]
    assert len(live) == 700
