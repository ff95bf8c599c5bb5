"""The agent's memory of what it was assigned, kept across restarts.

SwarmKit keeps assigned tasks and their last status in ``<state>/worker/tasks.db``; we do the
same with SQLite. After a restart the agent rebuilds its controllers from here and re-adopts
the running containers before its manager answers, so nothing is restarted needlessly.

The tasks carry their services' env in clear, so the DB is 0600 in a 0700 directory, created
so before SQLite opens it: SQLite gives the ``-wal`` and ``-shm`` files the main file's mode.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from shoal.filemodes import private_dir, private_file
from shoal.proto import objects_pb2 as pb

#: The files SQLite keeps beside the DB in WAL mode.
SIDE_FILES = ("-wal", "-shm")


class TaskDB:
    """Assigned tasks (the spec the manager sent) and the last status the agent observed."""

    def __init__(self, path: Path) -> None:
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

    def put_task(self, task: pb.Task) -> None:
        self._db.execute(
            "INSERT INTO tasks (id, task) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET task = excluded.task",
            (task.id, task.SerializeToString()),
        )

    def put_status(self, task_id: str, status: pb.TaskStatus) -> None:
        self._db.execute("UPDATE tasks SET status = ? WHERE id = ?", (status.SerializeToString(), task_id))

    def delete(self, task_id: str) -> None:
        self._db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))

    def load(self) -> list[tuple[pb.Task, pb.TaskStatus | None]]:
        rows = self._db.execute("SELECT task, status FROM tasks").fetchall()
        return [(pb.Task.FromString(t), pb.TaskStatus.FromString(s) if s else None) for t, s in rows]

    def close(self) -> None:
        self._db.close()
