"""The agent's task DB commits its writes together (issue 18): what it keeps is unchanged.

Each status a task passed through was an SQLite transaction of its own (six per task: a
quarter of a hollow fleet's CPU at 10,000 tasks). Now the writes of a batch share one
transaction, and only the latest status of each task is written.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from shoal.agent import taskdb as taskdb_module
from shoal.agent.taskdb import TaskDB
from shoal.proto import objects_pb2 as pb


def status(state: int) -> pb.TaskStatus:
    return pb.TaskStatus(state=state)  # type: ignore[arg-type]


def trace_commits(db: TaskDB) -> list[str]:
    """The statements that end a write transaction: each COMMIT, and each write on its own."""
    ends: list[str] = []
    open_ = [False]

    def seen(statement: str) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb == "BEGIN":
            open_[0] = True
        elif verb == "COMMIT":
            open_[0] = False
            ends.append(statement)
        elif verb in ("INSERT", "UPDATE", "DELETE") and not open_[0]:
            ends.append(statement)

    db._db.set_trace_callback(seen)
    return ends


async def test_the_writes_of_a_batch_are_one_transaction_keeping_the_latest(tmp_path: Path) -> None:
    db = TaskDB(tmp_path / "tasks.db", flush_delay=60)
    commits = trace_commits(db)
    db.put_task(pb.Task(id="t1"))
    for state in (pb.ACCEPTED, pb.PREPARING, pb.READY, pb.STARTING, pb.RUNNING):
        db.put_status("t1", status(state))
    db.put_task(pb.Task(id="t2"))
    db.put_status("t2", status(pb.RUNNING))
    db.delete("t2")
    db.put_task(pb.Task(id="t3"))
    db.put_status("t3", status(pb.PREPARING))
    db.delete("t3")
    db.put_task(pb.Task(id="t3", slot=3))  # assigned again after its removal: no status yet
    db.flush()
    assert len(commits) == 1, commits
    loaded = {task.id: (task, stored) for task, stored in db.load()}
    db.close()
    assert sorted(loaded) == ["t1", "t3"]
    assert loaded["t1"][1] == status(pb.RUNNING)
    assert loaded["t3"][0].slot == 3 and loaded["t3"][1] is None


async def test_writes_are_committed_a_delay_after_the_first_and_at_close(tmp_path: Path) -> None:
    db = TaskDB(tmp_path / "tasks.db", flush_delay=0.01)
    commits = trace_commits(db)
    db.put_task(pb.Task(id="t1"))
    for _ in range(500):  # until the delay has passed (bounded: each turn yields to the loop)
        if commits:
            break
        await asyncio.sleep(0.01)
    assert len(commits) == 1
    db.put_status("t1", status(pb.RUNNING))
    db.close()  # the last writes are not lost
    assert len(commits) == 2
    again = TaskDB(tmp_path / "tasks.db")
    assert [stored for _, stored in again.load()] == [status(pb.RUNNING)]
    again.close()
    with pytest.raises(sqlite3.ProgrammingError):
        db.put_status("t1", status(pb.FAILED))


class FailingOnce:
    """A connection whose first transaction fails (a full disk), then works."""

    def __init__(self, inner: sqlite3.Connection) -> None:
        self.inner = inner
        self.failures = 1

    def __enter__(self) -> sqlite3.Connection:
        return self.inner.__enter__()

    def __exit__(self, *exc: object) -> bool | None:
        return self.inner.__exit__(*exc)  # type: ignore[arg-type]

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "BEGIN" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.inner.execute(sql, *args)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_failed_transaction_keeps_its_writes_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails no longer raises into the task's state machine: the task runs on,
    its status is reported, and the write is tried again."""
    monkeypatch.setattr(taskdb_module, "RETRY_DELAY", 0.01)
    db = TaskDB(tmp_path / "tasks.db", flush_delay=60)
    real = db._db
    db._db = FailingOnce(real)  # type: ignore[assignment]
    db.put_task(pb.Task(id="t1"))
    db.put_status("t1", status(pb.RUNNING))
    db.flush()  # fails: kept
    assert db.transactions == 0
    for _ in range(500):
        if db.transactions:
            break
        await asyncio.sleep(0.01)
    db._db = real
    assert [stored for _, stored in db.load()] == [status(pb.RUNNING)]
    db.close()
