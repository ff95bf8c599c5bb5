"""The store role: a replicated, durable log under the kernel's in-memory object store.

The kernel owns the data model. It hands the provider opaque entries (serialised
``StoreBatch`` messages) and a ``StateMachine`` to apply committed entries to. The provider
decides ordering, durability and replication.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar, Protocol, runtime_checkable


class StoreUnavailable(Exception):
    """A proposal could not be committed: no leader, lost leadership, or the store stopped.

    The message is shown to users as is, so it should say what to do.
    """


@runtime_checkable
class StateMachine(Protocol):
    """Implemented by the kernel; called by the store provider, always from the event loop."""

    def apply(self, index: int, entry: bytes) -> None:
        """Apply one committed entry. Called exactly once per index, in index order."""

    def snapshot(self) -> bytes:
        """The whole applied state, for the provider to persist as a snapshot."""

    def restore(self, index: int, data: bytes) -> None:
        """Replace the whole state with a snapshot taken at ``index``."""


@runtime_checkable
class StoreProvider(Protocol):
    """A replicated log.

    Lifecycle: ``start`` -> (``propose`` ...) -> ``stop``. ``start`` first restores the last
    snapshot and replays every durable entry after it into the state machine, so when it
    returns the kernel's state is what was acknowledged before the last stop or crash.
    """

    role: ClassVar[str]  # "store"
    api_version: ClassVar[int]  # 1

    async def start(self, machine: StateMachine, *, bootstrap: bool) -> None:
        """Open the durable state and begin serving.

        ``bootstrap=True`` creates a new single-member group (``swarm init``); otherwise the
        existing state under the plugin's state dir is reopened, and it is an error to have none.
        """

    async def propose(self, entry: bytes) -> int:
        """Commit ``entry`` and return its index once it is durable and applied.

        The state machine's ``apply`` for this index has run before this returns. Raises
        ``StoreUnavailable`` when the entry cannot be committed (not leader, stopped).
        """

    def is_leader(self) -> bool:
        """Whether this member currently leads (may accept proposals)."""

    def leadership(self) -> AsyncIterator[bool]:
        """Yield the current leadership at once, then each change (True = became leader)."""

    async def stop(self) -> None:
        """Stop serving and close files. Acknowledged entries stay durable."""

    def status(self) -> dict[str, object]:
        """Free-form facts for ``node inspect`` and benchmarks (term, indexes, members)."""
