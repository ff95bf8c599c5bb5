"""Task events routed to the node they concern: one store watch for every assignment stream.

Each agent's assignment stream used to hold its own watch on every task event, so the store
put every event into every node's queue and every stream looked at every event: with 1,000
nodes and 10,000 tasks going through five states, 50 million queue entries and checks on the
leader's event loop, in bursts long enough to miss Raft heartbeats. The feed holds the one
watch and hands each event only to the subscribers of the task's node, and not even to those
when the subscriber says it has nothing to do with it (``skip``): most task events are the
statuses the agents themselves reported, which a stream never sends back; queued, each woke its
stream (a loop step, a look-up of the task, a comparison) only to be dropped there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from shoal.store.memory import Event, ObjectStore, Watch


class NodeTaskEvents(Watch):
    """The task events of one node, in commit order (a stream's private queue, filled by the
    feed rather than by the store: never registered with it), but those ``skip`` is true for."""

    def __init__(self, store: ObjectStore, skip: Callable[[Event], bool] | None) -> None:
        super().__init__(store, ["task"])
        #: Asked as each event is routed: true for one the subscriber would drop on arrival.
        self.skip = skip


class NodeTaskFeed:
    """Routes task events to per-node subscribers; ``run`` while the dispatcher runs."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._subscribers: dict[str, set[NodeTaskEvents]] = defaultdict(set)

    @contextmanager
    def subscribe(
        self, node_id: str, skip: Callable[[Event], bool] | None = None
    ) -> Iterator[NodeTaskEvents]:
        """The events of tasks on ``node_id`` routed from now on, but those ``skip`` (asked as
        each is routed, with the subscriber's state then) is true for. An event committed
        before may still arrive (it was on its way): readers take the task from the view."""
        events = NodeTaskEvents(self.store, skip)
        self._subscribers[node_id].add(events)
        try:
            yield events
        finally:
            subscribers = self._subscribers.get(node_id)
            if subscribers is not None:
                subscribers.discard(events)
                if not subscribers:
                    del self._subscribers[node_id]

    def route(self, event: Event) -> None:
        for events in self._subscribers.get(event.obj.node_id, ()):
            skip = events.skip
            if skip is None or not skip(event):
                events.queue.put_nowait(event)

    async def run(self) -> None:
        with self.store.watch(["task"]) as watch:
            while True:
                self.route(await watch.get())
                for event in watch.drain():
                    self.route(event)

    def task_watches(self) -> int:
        """How many subscriptions are open (for tests and debugging)."""
        return sum(len(s) for s in self._subscribers.values())

    def queued(self, node_id: str) -> int:
        """How many events wait in the subscriptions of ``node_id`` (for tests and debugging)."""
        return sum(events.queue.qsize() for events in self._subscribers.get(node_id, ()))
