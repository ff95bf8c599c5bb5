"""Safety checks of the simulation: what every member applied, leaders, commit indexes.

``AppliedHistory`` sits between each ``RaftStore`` and its ``ObjectStore`` (as the state
machine the provider drives), so it sees exactly what the kernel's store would apply, and
checks that no two members ever apply different entries at one index and that a snapshot a
member restores holds the state the applied entries up to its index produce.
"""

from __future__ import annotations

from shoal.proto import objects_pb2 as pb
from shoal.store.memory import ObjectStore


class Violation(AssertionError):
    """A safety invariant or the linearizability check failed."""


KV = dict[str, str]


def kv_of_services(services: list[pb.Service]) -> KV:
    """The client-visible register values: service ID -> its ``v`` label."""
    return {s.id: s.spec.annotations.labels.get("v", "") for s in services}


def kv_of_store(store: ObjectStore) -> KV:
    return kv_of_services(list(store.view.services.all()))


class AppliedHistory:
    """Every entry applied anywhere, by index; checks agreement as members apply."""

    def __init__(self) -> None:
        self.entries: dict[int, bytes] = {}
        #: The first violation seen. The provider turns any exception of ``apply`` into a fatal
        #: error of that member, so the simulation reads it from here rather than catching it.
        self.violation: Violation | None = None

    def fail(self, message: str) -> None:
        violation = Violation(message)
        if self.violation is None:
            self.violation = violation
        raise violation

    def applied(self, who: str, index: int, entry: bytes) -> None:
        seen = self.entries.setdefault(index, entry)
        if seen != entry:
            self.fail(f"state machine safety: {who} applied a different entry at index {index}")

    def expected_kv(self, up_to: int) -> KV:
        kv: KV = {}
        for index in sorted(i for i in self.entries if i <= up_to):
            for action in pb.StoreBatch.FromString(self.entries[index]).actions:
                if action.WhichOneof("target") != "service":
                    continue
                if action.kind == pb.StoreAction.DELETE:
                    kv.pop(action.service.id, None)
                else:
                    kv[action.service.id] = action.service.spec.annotations.labels.get("v", "")
        return kv

    def restored(self, who: str, index: int, data: bytes) -> None:
        got = kv_of_services(list(pb.StoreSnapshot.FromString(data).services))
        want = self.expected_kv(index)
        if got != want:
            self.fail(
                f"{who} restored a snapshot at index {index} holding {got}, but the entries applied "
                f"up to it give {want}"
            )


class RecordingMachine:
    """The ``StateMachine`` a member's provider drives: records, checks, then the real store."""

    def __init__(self, who: str, store: ObjectStore, history: AppliedHistory) -> None:
        self.who = who
        self.store = store
        self.history = history
        self.last_index = 0

    def apply(self, index: int, entry: bytes) -> None:
        if index <= self.last_index:
            self.history.fail(
                f"{self.who} applied index {index} after {self.last_index} (not once, in order)"
            )
        self.last_index = index
        self.history.applied(self.who, index, entry)
        self.store.apply(index, entry)

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def restore(self, index: int, data: bytes) -> None:
        self.history.restored(self.who, index, data)
        self.last_index = index
        self.store.restore(index, data)
