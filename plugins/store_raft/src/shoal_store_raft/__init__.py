"""shoal's default store: Raft.

``raft`` holds the consensus algorithm as a pure state machine (no I/O, no clock), ``wal`` and
``snapfile`` make its state durable, and ``provider`` drives it from asyncio as the kernel's
``StoreProvider``.
"""

from shoal_store_raft.provider import RaftStore

__all__ = ["RaftStore"]
