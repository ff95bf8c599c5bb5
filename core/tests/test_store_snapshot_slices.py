"""``ObjectStore.snapshot_slices``: the snapshot in pieces a store provider can encode between
other work; joined, the bytes of the whole store as one ``StoreSnapshot``, at the state of the
call however many applies follow."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from shoal.proto import objects_pb2 as pb
from shoal.store.memory import CREATE, DELETE, UPDATE, ObjectStore


def entry(*changes: tuple[int, pb.Task | pb.Node]) -> bytes:
    batch = pb.StoreBatch()
    for action, obj in changes:
        kind = "task" if isinstance(obj, pb.Task) else "node"
        getattr(batch.actions.add(kind=action), kind).CopyFrom(obj)
    return batch.SerializeToString()


def loaded_store() -> ObjectStore:
    """Every kind, several slices of tasks."""
    store = ObjectStore()
    view = store.view
    view.put("cluster", pb.Cluster(id="c1"))
    for n in range(3):
        view.put("node", pb.Node(id=f"n{n}"))
    view.put("service", pb.Service(id="s1"))
    for n in range(25):
        view.put("task", pb.Task(id=f"t{n:02d}", service_id="s1", node_id=f"n{n % 3}"))
    view.put("secret", pb.Secret(id="x1"))
    view.put("config", pb.Config(id="g1"))
    view.put("network", pb.Network(id="w1"))
    store.applied_index = 10
    return store


def whole(store: ObjectStore) -> bytes:
    """The store as one message (what ``snapshot`` encoded before it came in pieces)."""
    v = store.view
    return pb.StoreSnapshot(
        clusters=v.clusters.items.values(),
        nodes=v.nodes.items.values(),
        services=v.services.items.values(),
        tasks=v.tasks.items.values(),
        secrets=v.secrets.items.values(),
        configs=v.configs.items.values(),
        networks=v.networks.items.values(),
    ).SerializeToString()


def test_the_pieces_joined_are_the_whole_store_in_one_message() -> None:
    store = loaded_store()
    pieces = list(store.snapshot_slices(per_slice=10))
    assert len(pieces) == 3 + 6  # tasks in 3 pieces of at most 10; one per other kind
    assert b"".join(pieces) == whole(store) == store.snapshot()
    restored = ObjectStore()
    restored.restore(10, b"".join(pieces))
    assert whole(restored) == whole(store)


def test_applies_after_the_call_do_not_leak_into_the_pieces() -> None:
    store = loaded_store()
    before = whole(store)
    pieces = store.snapshot_slices(per_slice=4)
    first = next(pieces)  # the encoding is under way when the writes come
    changed = pb.Task(id="t03", service_id="s1", node_id="n2", desired_state=pb.SHUTDOWN)
    store.apply(11, entry((UPDATE, changed), (CREATE, pb.Task(id="t99", service_id="s1"))))
    store.apply(12, entry((DELETE, pb.Task(id="t20")), (CREATE, pb.Node(id="n9"))))
    assert whole(store) != before
    assert first + b"".join(pieces) == before


class Rebuilt:
    """An apply listener that counts the tasks of the view it was told was restored."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.tasks: list[int] = []

    def applied(self, events: list[object]) -> None:
        pass

    def restored(self) -> None:
        self.tasks.append(len(self.store.view.tasks))


def test_a_restore_in_steps_shows_the_old_state_until_its_last_step() -> None:
    data = loaded_store().snapshot()
    store = ObjectStore()
    store.view.put("task", pb.Task(id="old", service_id="s0"))
    store.applied_index = 3
    view = store.view
    listener = Rebuilt(store)
    store.listen(listener)
    steps = store.restore_steps(10, data, per_step=10)
    for _ in range(3):  # 33 objects in pieces of 10: the last piece puts the new view in place
        next(steps)
        assert set(store.view.tasks.items) == {"old"} and store.view.tasks_by_service == {"s0": {"old"}}
        assert store.applied_index == 3 and listener.tasks == []
    assert list(steps) == [None]
    assert store.view is view and whole(store) == data and store.applied_index == 10
    loaded = loaded_store().view
    assert (
        store.view.tasks_by_node == loaded.tasks_by_node
        and store.view.tasks_by_service == loaded.tasks_by_service
    )
    assert listener.tasks == [25]


def test_a_restore_in_steps_dropped_before_its_end_changes_nothing_and_an_empty_one_empties() -> None:
    store = loaded_store()
    before = whole(store)
    steps = store.restore_steps(20, ObjectStore().snapshot(), per_step=10)
    assert list(steps) == []  # an empty snapshot: no piece to put, the store emptied at the end
    assert len(store.view.tasks) == 0 and store.applied_index == 20
    store = loaded_store()
    steps = store.restore_steps(
        30, ObjectStore().snapshot() + pb.StoreSnapshot(tasks=[pb.Task(id="x")]).SerializeToString()
    )
    next(steps)
    del steps
    assert whole(store) == before and store.applied_index == 10


def test_a_restore_in_steps_reads_what_a_whole_parse_reads() -> None:
    data = loaded_store().snapshot()
    with pytest.raises(DecodeError):
        list(ObjectStore().restore_steps(10, data[:-3], per_step=4))
    # A field that is not an object (a varint, field 99: none today) is kept, the rest read whole.
    odd = b"\x98\x06\x07" + data
    store = ObjectStore()
    assert len(list(store.restore_steps(10, odd, per_step=4))) == 1
    assert whole(store) == data
