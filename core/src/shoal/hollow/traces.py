"""The fleet's session traces, written once when a fleet process stops.

Each node's agent keeps its recent session steps (``agent/sessiontrace.py``); a benchmark that
wants to know where a failover's seconds went reads them after the run (``trace-<first
index>.json`` in the fleet's state directory: hostname -> rows of [wall time, event, manager,
detail]).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from shoal.agent.sessiontrace import TraceRow
from shoal.hollow.node import HollowNode
from shoal.identity import atomic_write

TRACE_GLOB = "trace-*.json"


def write_traces(path: Path, nodes: Iterable[HollowNode]) -> None:
    rows = {node.profile.hostname: node.agent.trace.as_rows() for node in nodes if node.agent is not None}
    atomic_write(path, json.dumps(rows).encode(), 0o600)


def read_traces(state_dir: Path) -> dict[str, list[TraceRow]]:
    """Every process's traces, by hostname."""
    traces: dict[str, list[TraceRow]] = {}
    for path in sorted(state_dir.glob(TRACE_GLOB)):
        try:
            part = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for hostname, rows in part.items():
            traces[hostname] = [(float(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]
    return traces
