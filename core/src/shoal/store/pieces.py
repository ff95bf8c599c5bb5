"""Indexes of the store's tasks, kept as the store applies, built over a loaded store in pieces.

A new leader's components each index every task (the scheduler's node totals, the reaper's
slots, the orchestrator's live slots): one pass each over 100,000 tasks held the loop for
about a second together. Built in pieces instead, an index follows the applies from the
start but skips the tasks it has not indexed yet; the view's version of each is indexed when
its turn comes, so at the end it is exactly what one pass would have built.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

from shoal.proto import objects_pb2 as pb
from shoal.store.memory import (
    DELETE,
    Event,
    ObjectStore,
    ReadView,
    Restoring,
    finish,
    visit_in_pieces,
    visit_in_steps,
)

#: Tasks indexed per loop step.
INDEXED_PER_STEP = 5_000

K = TypeVar("K")


def add_count(counter: Counter[K], key: K, delta: int) -> None:
    """Add ``delta`` to ``counter[key]``, dropping the key at zero (a listing reads the keys)."""
    value = counter[key] + delta
    if value:
        counter[key] = value
    else:
        del counter[key]


def not_indexed_yet(uncounted: set[str], event: Event) -> bool:
    """Whether the applies must skip this task event: its task is still to be indexed from the
    view (a task deleted meanwhile is taken off the list)."""
    if not uncounted or event.obj.id not in uncounted:
        return False
    if event.action == DELETE:
        uncounted.discard(event.obj.id)
    return True


class TaskIndexInPieces(ABC):
    """Base of an ``ApplyListener`` over tasks that a new leader builds in pieces: subclasses
    give ``_reset`` (empty the index) and ``_enter`` (index one task)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        #: While building: the view's tasks not indexed yet.
        self._uncounted: set[str] = set()
        self._stop: Callable[[], None] | None = None

    @property
    def ready(self) -> bool:
        """Whether the index holds every task of the view (not while it is being built)."""
        return self._stop is not None and not self._uncounted

    @abstractmethod
    def _reset(self) -> None:
        """Empty the index."""

    @abstractmethod
    def _enter(self, task: pb.Task) -> None:
        """Index one task of the view."""

    async def start_in_pieces(self, per_step: int = 0) -> None:
        """Follow every change from now on and index the view's tasks ``per_step`` (default
        INDEXED_PER_STEP) per loop step (again: no-op)."""
        if self._stop is not None:
            return
        self._reset()
        self._uncounted = set(self.store.view.tasks.items)
        self._stop = self.store.listen(self)  # type: ignore[arg-type] # subclasses are listeners
        await visit_in_pieces(
            self._uncounted, self.store.view.tasks, self._enter, per_step or INDEXED_PER_STEP
        )

    def restored(self) -> None:
        """The whole view was replaced: index it again, in one pass."""
        finish(self.restoring(self.store.view))()

    def restoring(self, view: ReadView) -> Restoring:
        """Index ``view``'s tasks a step at a time (``ObjectStore.restore_steps``), in a copy
        whose index is put in place at the end."""
        fresh = copy.copy(self)
        fresh._reset()  # new containers: this one's stay as they are meanwhile
        yield from visit_in_steps(view.tasks.all(), fresh._enter)

        def install() -> None:
            following = self._stop  # whether it follows the applies may have changed meanwhile
            vars(self).update(vars(fresh))
            self._stop, self._uncounted = following, set()

        return install

    def _task_events(self, events: list[Event]) -> Iterator[Event]:
        """The task events among ``events`` that the index follows (not those of tasks still
        to be indexed from the view)."""
        uncounted = self._uncounted
        for event in events:
            # ``not uncounted`` first: the index is built (every apply but a new leader's
            # first), and the call is saved for every event of every index.
            if event.kind == "task" and (not uncounted or not not_indexed_yet(uncounted, event)):
                yield event

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None
        self._uncounted = set()
