"""The store role: a replicated, durable log under the kernel's in-memory object store.

The kernel owns the data model. It hands the provider opaque entries (serialised
``StoreBatch`` messages) and a ``StateMachine`` to apply committed entries to. The provider
decides ordering, durability and replication.

API version 2 adds replication between managers. The provider never opens a socket: the
kernel carries its opaque messages over the cluster's transport (mutual TLS, manager
certificates only) and tells it who is a member. Members are named by non-zero 64-bit
integers the provider picks (``member_id``); the kernel records them in each manager's node
object (``manager_status.raft_id``) beside its address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable


class StoreUnavailable(Exception):
    """A proposal could not be committed: no leader, lost leadership, or the store stopped.

    The message is shown to users as is, so it should say what to do.
    """


class StoreOpenError(Exception):
    """``start`` found durable state it must not open: damaged, missing or inconsistent.

    Opening anyway could serve state that lost acknowledged writes, so the daemon prints the
    message (one line: which file, where, and how to recover) and exits non-zero.
    """


class NotLeaderError(StoreUnavailable):
    """``propose`` on a member that does not lead: nothing was written, so the caller may
    safely send the write to the leader instead."""


class MemberRemoved(StoreUnavailable):
    """This member is no longer part of the group (demoted, removed, or the group was
    recovered without it): its state is stale and it must leave and join again."""


@dataclass(frozen=True)
class MemberInfo:
    """One member of the group as this replica sees it (for ``node ls`` MANAGER STATUS)."""

    member_id: int
    voter: bool
    leader: bool
    #: Whether this replica heard from it recently (the leader's view is the authoritative one).
    reachable: bool


#: ``send(member_id, data)``: deliver opaque ``data`` to member ``member_id``. Must not block;
#: the kernel queues, batches and may drop (the provider retries as its protocol requires).
SendFunc = Callable[[int, bytes], None]


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
    api_version: ClassVar[int]  # 2

    async def start(
        self,
        machine: StateMachine,
        *,
        bootstrap: bool,
        join: bool = False,
        force_new_cluster: bool = False,
    ) -> None:
        """Open the durable state and begin serving.

        ``bootstrap=True`` creates a new single-member group (``swarm init``). ``join=True``
        creates an empty member that waits for the leader to add it and send it the state
        (``swarm join`` with a manager token). ``force_new_cluster=True`` reopens the existing
        state and makes this member the only one, keeping everything it had committed
        (``swarm init --force-new-cluster``). Otherwise the existing state is reopened, and it
        is an error to have none. State that is damaged, missing or inconsistent raises
        ``StoreOpenError`` with a one-line message: never open on fewer writes than were
        acknowledged.
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

    # -- replication (API 2) ------------------------------------------------------------

    @property
    def member_id(self) -> int:
        """This member's ID (valid once ``start`` returned)."""

    def attach(self, send: SendFunc) -> None:
        """Give the provider the kernel's send function (before or after ``start``)."""

    def receive(self, data: bytes) -> None:
        """Feed data another member sent (called by the kernel on the event loop)."""

    def report_unreachable(self, member_id: int) -> None:
        """The kernel could not deliver to ``member_id``; the provider may back off."""

    def leader_id(self) -> int:
        """The member this replica believes leads, or 0 when it knows of none."""

    def members(self) -> list[MemberInfo]:
        """Every member (voters and non-voters) with this replica's view of it."""

    async def add_member(self, member_id: int) -> None:
        """Leader only: add ``member_id`` as a non-voter, wait until it has caught up, then
        make it a voter. Returns once it votes. Raises ``StoreUnavailable``."""

    async def remove_member(self, member_id: int) -> None:
        """Leader only: remove a member; returns once the removal is committed."""

    def tune(self, *, tick_ms: int, election_ticks: int, heartbeat_ticks: int) -> None:
        """Apply the swarm's consensus timing (``swarm update --raft-tick/--election-tick/
        --heartbeat-tick``) from now on. Raises ``ValueError`` for values it cannot use."""

    async def transfer_leadership(self, member_id: int = 0, timeout: float = 10.0) -> int:  # noqa: ASYNC109
        """Hand leadership to ``member_id`` (0: the most up-to-date voter); returns the new
        leader's ID. Raises ``StoreUnavailable`` if no one took over within ``timeout``."""
