"""Tells extension plugins about task state changes (the ``shoal_task_state_changed`` hook).

It runs on the leader, after commits: observers see what the cluster agreed on, and a slow or
broken observer cannot delay or fail a write. Exceptions are logged and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from shoal.store.memory import DELETE, Event, ObjectStore

log = logging.getLogger("shoal.observers")


class TaskStateObservers:
    """Calls ``notify(task=..., old_state=..., new_state=...)`` for each observed-state change."""

    def __init__(self, store: ObjectStore, notify: Callable[..., Any]) -> None:
        self.store = store
        self.notify = notify
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="task-observers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _observed(self) -> bool:
        """Whether anything implements the hook: a plugin manager's hook with no
        implementation still costs a call per task state change (two per task started)."""
        implementations = getattr(self.notify, "get_hookimpls", None)
        return implementations is None or bool(implementations())

    async def _run(self) -> None:
        with self.store.watch(["task"]) as watch:
            while True:
                events = [await watch.get(), *watch.drain()]
                if not self._observed():
                    continue
                for event in events:
                    self._tell(event)

    def _tell(self, event: Event) -> None:
        if event.action == DELETE:
            return
        old_state = event.old.status.state if event.old is not None else -1
        new_state = event.obj.status.state
        if old_state == new_state:
            return
        try:
            self.notify(task=event.obj, old_state=old_state, new_state=new_state)
        except Exception:
            log.exception("a shoal_task_state_changed implementation failed")
