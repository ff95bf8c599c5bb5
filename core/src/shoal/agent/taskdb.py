"""The agent's memory of what it was assigned, kept across restarts.

SwarmKit keeps assigned tasks and their last status in ``<state>/worker/tasks.db``; we do the
same with SQLite. After a restart the agent rebuilds its controllers from here and re-adopts
the running containers before its manager answers, so nothing is restarted needlessly.

Writes are gathered and committed together: one transaction for all the changes of up to
``FLUSH_DELAY`` (and before every status report: ``flush``), keeping only the latest status of
each task. A task steps ACCEPTED -> PREPARING -> READY -> STARTING -> RUNNING within
milliseconds, and each step was its own SQLite transaction: six commits per task, 44% of a
hollow agent's CPU at 10,000 tasks. A write may be allowed to wait longer (``within``): the
writes of a task whose status reports the manager let the agent hold wait for the report that
flushes them, rather than commit each task's alone while its tasks come one by one. What a
crash can cost is what was written within that wait, never a status the manager was told (the
agent flushes before it reports): the agent then restarts from an earlier step of the same
task, or from the manager's complete set of assignments, which every step tolerates (a create
or start of a container that exists is adopted, as after a crash between the call and its
status).

A removed task's delete waits longer still (``DELETE_DELAY``) and goes with the next report's
flush: a crash before it is committed leaves a row the agent re-adopts and removes again (the
manager's complete set no longer has the task), as it does for a crash between the container's
removal and the delete. Committed within ``FLUSH_DELAY`` as the other writes, the deletes of a
node's tasks removed one by one (``service rm`` of 100,000 replicas on 1,000 nodes: one per
node about every second) were a transaction each, beside each task's SHUTDOWN report's: two
transactions per task removed, a quarter of the agent's CPU in the removal. The wait is
longer than that pace (a delete due within a second would race the next task's report).

The tasks carry their services' env in clear, so the DB is 0600 in a 0700 directory, created
so before SQLite opens it: SQLite gives the ``-wal`` and ``-shm`` files the main file's mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from shoal.filemodes import private_dir, private_file
from shoal.proto import objects_pb2 as pb

log = logging.getLogger("shoal.agent")

#: The files SQLite keeps beside the DB in WAL mode.
SIDE_FILES = ("-wal", "-shm")
#: How long a write waits for others to share its transaction (the status reports' interval).
FLUSH_DELAY = 0.05
#: How long a removed task's delete may wait for a transaction (see the module's docstring).
DELETE_DELAY = 5.0
#: How long after a failed transaction (a full disk) its writes are tried again.
RETRY_DELAY = 1.0

_UPSERT_TASK = "INSERT INTO tasks (id, task) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET task = excluded.task"
_UPDATE_STATUS = "UPDATE tasks SET status = ? WHERE id = ?"
_DELETE = "DELETE FROM tasks WHERE id = ?"


@dataclass
class _Pending:
    """What is still to be written for one task: its row deleted first, then its spec and
    its status (each the latest given), in that order."""

    deleted: bool = False
    task: bytes | None = None
    status: bytes | None = None


class TaskDB:
    """Assigned tasks (the spec the manager sent) and the last status the agent observed.

    Inside an event loop, writes are committed together ``flush_delay`` after the first of
    them (or at ``flush``, ``load``, ``close``); outside one, each is committed at once."""

    def __init__(self, path: Path, *, flush_delay: float = FLUSH_DELAY) -> None:
        private_dir(path.parent)
        private_file(path)
        for suffix in SIDE_FILES:  # left by an older version with a wider mode
            side = path.with_name(path.name + suffix)
            if side.exists():
                private_file(side)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, task BLOB NOT NULL, status BLOB)"
        )
        self.flush_delay = flush_delay
        self._pending: dict[str, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        #: Transactions committed (for tests: the cost of the writes).
        self.transactions = 0

    def put_task(self, task: pb.Task, *, within: float | None = None) -> None:
        """Write ``task``'s spec, committed within ``within`` seconds (None: ``flush_delay``)
        or at the next ``flush``."""
        self._entry(task.id).task = task.SerializeToString()
        self._written(within)

    def put_status(self, task_id: str, status: pb.TaskStatus, *, within: float | None = None) -> None:
        """Write the task's latest status, committed as ``put_task``."""
        self._entry(task_id).status = status.SerializeToString()
        self._written(within)

    def delete(self, task_id: str, *, within: float = DELETE_DELAY) -> None:
        """Forget the task (its container is removed), committed within ``within`` seconds or
        at the next ``flush``."""
        self._entry(task_id)  # refused once closed
        self._pending[task_id] = _Pending(deleted=True)  # what was to be written before is moot
        self._written(within)

    def load(self) -> list[tuple[pb.Task, pb.TaskStatus | None]]:
        self.flush()
        rows = self._db.execute("SELECT task, status FROM tasks").fetchall()
        return [(pb.Task.FromString(t), pb.TaskStatus.FromString(s) if s else None) for t, s in rows]

    def flush(self) -> None:
        """Commit every write given so far, in one transaction."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        pending = self._pending
        try:
            deleted = [(task_id,) for task_id, p in pending.items() if p.deleted]
            tasks = [(task_id, p.task) for task_id, p in pending.items() if p.task is not None]
            statuses = [(p.status, task_id) for task_id, p in pending.items() if p.status is not None]
            with self._db:  # BEGIN ... COMMIT (ROLLBACK on an error)
                self._db.execute("BEGIN")
                for statement, rows in (
                    (_DELETE, deleted),
                    (_UPSERT_TASK, tasks),
                    (_UPDATE_STATUS, statuses),
                ):
                    if rows:
                        self._db.executemany(statement, rows)
        except sqlite3.Error as exc:
            # The tasks run on and their statuses are reported all the same: only what a
            # restart would re-adopt is behind. Tried again in a while (and with the next flush).
            log.warning("could not write the task DB (%d tasks kept for the next try): %s", len(pending), exc)
            with contextlib.suppress(RuntimeError):  # no event loop: the next write tries again
                self._timer = asyncio.get_running_loop().call_later(RETRY_DELAY, self.flush)
            return
        self._pending = {}
        self.transactions += 1

    def close(self) -> None:
        self.flush()
        if self._timer is not None:  # the last flush failed: nothing will try it again
            self._timer.cancel()
            self._timer = None
        self._db.close()
        self._closed = True

    def _entry(self, task_id: str) -> _Pending:
        if self._closed:  # as a closed connection refuses a write
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        entry = self._pending.get(task_id)
        if entry is None:
            entry = self._pending[task_id] = _Pending()
        return entry

    def _written(self, within: float | None = None) -> None:
        """A write that must be committed within ``within`` seconds (None: ``flush_delay``):
        the timer goes off at the earliest such time of the writes pending."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing would flush later
            self.flush()
            return
        due = loop.time() + (self.flush_delay if within is None else within)
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()
        self._timer = loop.call_at(due, self.flush)
