"""A node's recent session history: when it lost its session, which manager it tried, what it
was told (go to the leader, come back in N seconds) and when a session opened again.

After a leader change a fleet's "every session back" is the last of a thousand such histories;
without them, the seconds between the election and the last reopen cannot be told apart
(backoff, a follower's hold, the leader's retry-afters, TLS handshakes). Kept in memory,
bounded, a few entries per reconnect; ``shoal hollow`` writes its nodes' traces when it stops.
"""

from __future__ import annotations

import time
from collections import deque

#: Entries kept per node: several reconnects' worth.
TRACE_LENGTH = 64

#: One step: ``at`` (wall clock), what happened, with which manager, and a detail (a
#: retry-after, a backoff, an error's message). Kept as the row ``shoal hollow`` writes.
TraceRow = tuple[float, str, str, str]


class SessionTrace:
    """The last ``TRACE_LENGTH`` session steps of one agent."""

    def __init__(self, length: int = TRACE_LENGTH) -> None:
        self.entries: deque[TraceRow] = deque(maxlen=length)

    def record(self, event: str, manager: str = "", detail: str = "") -> None:
        self.entries.append((time.time(), event, manager, detail))

    def as_rows(self) -> list[TraceRow]:
        return list(self.entries)
