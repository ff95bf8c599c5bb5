"""The store keeps its watches in one registry, by kind (issue 18).

Watches were kept twice, in a set and by kind, both changed on every open and close: two
sources of truth that could disagree. Now the by-kind registry is the only one (delivery goes
by kind: the 500x win for a thousand node watches) and the set of every watch is derived."""

from __future__ import annotations

import random

from shoal.proto import objects_pb2 as pb
from shoal.store.memory import KINDS, Event, ObjectStore, Watch
from shoal.testing.objectstore import instant_store


def _holders_of_watches(store: ObjectStore) -> list[str]:
    """The store's attributes that hold Watch objects (directly or in a dict's sets)."""
    holders = []
    for name, value in vars(store).items():
        items = list(value.values()) if isinstance(value, dict) else [value]
        flat = [w for item in items for w in (item if isinstance(item, (set, list)) else [item])]
        if any(isinstance(w, Watch) for w in flat):
            holders.append(name)
    return holders


async def test_watches_open_and_close_in_any_order_and_each_hears_what_it_wants() -> None:
    store = await instant_store()
    rng = random.Random(18)
    open_watches: list[Watch] = []
    heard: dict[Watch, list[Event]] = {}
    for round_number in range(60):
        for _ in range(rng.randint(0, 3)):
            kinds = None if rng.random() < 0.2 else rng.sample(KINDS, rng.randint(1, 3))
            where = (lambda e: e.obj.id.endswith("1")) if rng.random() < 0.3 else None
            watch = store.watch(kinds, where=where)
            open_watches.append(watch)
            heard[watch] = []
        for watch in rng.sample(open_watches, rng.randint(0, min(2, len(open_watches)))):
            watch.close()
            open_watches.remove(watch)
        assert store._watches == set(open_watches), f"after round {round_number}"
        registries = _holders_of_watches(store)
        assert registries == (["_watches_by_kind"] if open_watches else []), f"watches kept in {registries}"
        events = []

        def write(tx: object, n: int = round_number) -> None:
            tx.create(pb.Node(id=f"n{n}"))  # type: ignore[attr-defined]
            tx.create(pb.Task(id=f"t{n}"))  # type: ignore[attr-defined]
            tx.create(pb.Service(id=f"s{n}"))  # type: ignore[attr-defined]

        with store.watch() as everything:
            await store.update(write)
            store._publish_applied()  # what the loop does three turns after the apply
            events = everything.drain()
        for watch in open_watches:
            got = watch.drain()
            assert got == [e for e in events if watch.wants(e)], f"round {round_number}: {watch.kinds}"
            heard[watch].extend(got)
    assert any(heard.values())
    for watch in open_watches:
        watch.close()
    assert store._watches == set() and store._watches_by_kind == {}
