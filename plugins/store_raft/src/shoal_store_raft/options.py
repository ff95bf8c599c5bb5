"""The ``--plugin-opt store.KEY=VALUE`` settings this plugin understands, validated up front."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shoal_store_raft.wal import DEFAULT_SEGMENT_BYTES

#: The default of ``snapshot-wal-bytes`` (see docs/benchmarks.md, helper wal's subsection, for
#: how it was chosen).
DEFAULT_SNAPSHOT_WAL_BYTES = 64 << 20

#: Options that may be 0, and what 0 means for each.
_ZERO_MEANS = {"spare-batch-ms": "off", "direct-links": "off", "direct-port": "any free port"}
#: Largest value per option, where there is one.
_MAXIMUM = {"direct-links": 1, "direct-port": 65535}


@dataclass(frozen=True)
class RaftOptions:
    #: Take a state machine snapshot (and compact the WAL) every this many applied entries.
    snapshot_interval: int = 10000
    #: ... or once this many bytes were written to the WAL since the last snapshot, whichever
    #: comes first: one entry may hold up to 1,000 changes, so 10,000 entries of them let the
    #: WAL grow to 1.3 GB (at 100,000 tasks) before the first snapshot.
    snapshot_wal_bytes: int = DEFAULT_SNAPSHOT_WAL_BYTES
    #: Milliseconds per Raft tick; elections take ``election_ticks`` ticks, heartbeats one.
    tick_ms: int = 100
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    #: Start a new WAL segment once the current one reaches this size.
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    #: How long a joining manager may take to catch up with the log before the join fails.
    catch_up_seconds: int = 120
    #: Followers beyond the ones a commit needs get new entries in batches at most this many
    #: milliseconds apart instead of at once (see ``spares``); 0 sends to every follower at once.
    spare_batch_ms: int = 20
    #: 1: replicate over direct mutual-TLS links between managers where they can be set up
    #: (``directnet``; ~0.2 ms less per write than gRPC streams); 0: over gRPC only.
    direct_links: int = 1
    #: The TCP port the direct links' listener binds on the advertise address's host; 0 picks a
    #: free one below the ephemeral range (fine on one host or an open network; behind a firewall
    #: choose one and open it).
    #: Managers that cannot reach it replicate over gRPC as before.
    direct_port: int = 0

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> RaftOptions:
        """Build from plugin options; a bad key or value raises ``ValueError`` naming it."""
        known = {name.replace("_", "-"): name for name in cls.__dataclass_fields__}
        values: dict[str, int] = {}
        for key, raw in options.items():
            if key not in known:
                raise ValueError(
                    f"unknown store option {key!r} for the raft store (known: {', '.join(sorted(known))})"
                )
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"store option {key} must be a positive integer, got {raw!r}") from None
            if value < (0 if key in _ZERO_MEANS else 1):
                what = (
                    f"0 ({_ZERO_MEANS[key]}) or a positive integer"
                    if key in _ZERO_MEANS
                    else "a positive integer"
                )
                raise ValueError(f"store option {key} must be {what}, got {raw!r}")
            if value > _MAXIMUM.get(key, value):
                raise ValueError(f"store option {key} must be at most {_MAXIMUM[key]}, got {raw!r}")
            values[known[key]] = value
        opts = cls(**values)
        if opts.election_ticks <= opts.heartbeat_ticks:
            raise ValueError("store option election-ticks must be greater than heartbeat-ticks")
        return opts
