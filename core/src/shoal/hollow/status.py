"""What a fleet process reports about its nodes, as a small JSON file rewritten every half second.

A benchmark needs to know, without asking the managers (whose answers it is measuring), how
many nodes have a session open and since when (after a leader change: are all sessions back?),
and how many tasks the nodes run, per node (a drain: are the drained nodes empty?) and in total
(the tasks-running-over-time plot). Each process writes ``status-<first index>.json`` in the
fleet's state directory; ``read_fleet`` adds the files up.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shoal.hollow.node import HollowNode
from shoal.identity import atomic_write

#: How often a fleet process rewrites its status file.
STATUS_INTERVAL = 0.5
STATUS_GLOB = "status-*.json"


@dataclass
class FleetStatus:
    """One process's nodes (or the sum over processes) at ``at`` (wall clock)."""

    at: float = 0.0
    nodes: int = 0
    connected: int = 0
    #: Oldest and newest opening time (wall clock) of the sessions open now; 0 with none.
    oldest_session: float = 0.0
    newest_session: float = 0.0
    #: Tasks the nodes' agents hold (any state, removals under way included) and run.
    tasks: int = 0
    running: int = 0
    running_by_node: dict[str, int] = field(default_factory=dict)

    def all_back_since(self, when: float) -> bool:
        """Every node has a session that opened after ``when``."""
        return self.nodes > 0 and self.connected == self.nodes and self.oldest_session > when


def status_of(nodes: Iterable[HollowNode]) -> FleetStatus:
    status = FleetStatus(at=time.time())
    opened: list[float] = []
    for node in nodes:
        status.nodes += 1
        agent = node.agent
        if agent is None:
            continue
        if agent.connected.is_set():
            status.connected += 1
            opened.append(agent.session_opened_at)
        status.tasks += agent.tasks_held
        running = agent.tasks_running  # kept by the agent: no walk over its tasks
        status.running += running
        if running:
            status.running_by_node[node.profile.hostname] = running
    if opened:
        status.oldest_session, status.newest_session = min(opened), max(opened)
    return status


def write_status(path: Path, status: FleetStatus) -> None:
    """Replace ``path`` at once (a reader never sees half a file: written beside it, then
    renamed over it), 0600 like every file a node writes under its state dir.

    Not synced to disk: the file is rewritten every half second for a reader on this machine
    and means nothing after a crash. Each rewrite used to take two fsyncs (the file and its
    directory), four a second per fleet process, each a journal commit on the disk that the
    managers' Raft logs wait on too."""
    atomic_write(path, json.dumps(asdict(status)).encode(), 0o600, durable=False)


def read_fleet(state_dir: Path) -> FleetStatus:
    """The sum of every process's last status (oldest session: the oldest of all)."""
    total = FleetStatus()
    by_node: Counter[str] = Counter()
    for path in sorted(state_dir.glob(STATUS_GLOB)):
        try:
            part = FleetStatus(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue  # being replaced, or not written yet
        total.at = max(total.at, part.at)
        total.nodes += part.nodes
        total.connected += part.connected
        total.tasks += part.tasks
        total.running += part.running
        by_node.update(part.running_by_node)
        if part.connected:
            total.oldest_session = min(total.oldest_session or part.oldest_session, part.oldest_session)
            total.newest_session = max(total.newest_session, part.newest_session)
    total.running_by_node = dict(by_node)
    return total
