"""A store that refuses its state at a swarm call (join, --force-new-cluster) answers one line.

At daemon start the CLI prints ``StoreOpenError`` and exits 1 (tests/security/test_wal_corruption.py);
the same refusal during a local API call must be an answer, not "internal error" and a logged
traceback.
"""

from __future__ import annotations

from shoal.daemon.node import map_error
from shoal.roles import StatusCode, StoreOpenError


class DamagedLog(StoreOpenError):
    """What a provider raises (the raft store's WalCorruption is one)."""


def test_a_store_open_error_is_a_failed_precondition_with_its_message() -> None:
    message = "raft WAL /x/0.wal is corrupt at offset 12: record fails its CRC check; To recover: ..."
    error = map_error(DamagedLog(message))
    assert error is not None
    assert error.code == StatusCode.FAILED_PRECONDITION and error.message == message
