"""Task events routed to the node they concern: one store watch for every assignment stream.

Each agent's assignment stream used to hold its own watch on every task event, so the store
put every event into every node's queue and every stream looked at every event: with 1,000
nodes and 10,000 tasks going through five states, 50 million queue entries and checks on the
leader's event loop, in bursts long enough to miss Raft heartbeats. The feed holds the one
watch and hands each event only to the subscribers of the task's node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from shoal.store.memory import Event, ObjectStore, Watch


class NodeTaskEvents(Watch):
    """The task events of one node, in commit order (a stream's private queue, filled by the
    feed rather than by the store: never registered with it)."""


class NodeTaskFeed:
    """Routes task events to per-node subscribers; ``run`` while the dispatcher runs."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._subscribers: dict[str, set[NodeTaskEvents]] = defaultdict(set)

    @contextmanager
    def subscribe(self, node_id: str) -> Iterator[NodeTaskEvents]:
        """The events of tasks on ``node_id`` routed from now on. An event committed before
        may still arrive (it was on its way): readers take the task from the view."""
        events = NodeTaskEvents(self.store, ["task"])
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
