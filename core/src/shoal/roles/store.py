"""The store role: a replicated, durable log under the kernel's in-memory object store.

The kernel owns the data model. It hands the provider opaque entries (serialised
``StoreBatch`` messages) and a ``StateMachine`` to apply committed entries to. The provider
decides ordering, durability and replication, and how its members find each other.

API version 3 says what the kernel needs from *any* replicated store, not from an in-process
Raft: propose and learn when the entry is committed and applied; apply in order (the kernel's
object store then serves reads and watches from the applied state); catch a member up from a
snapshot of the state machine if the store needs one; tell leadership (am I leader, who is,
notify on change) and membership (add or remove a manager by node ID and address, list the
members with their reachability). How members talk to each other is the provider's business:
one that replicates itself (Raft) serves its own RPC methods over the cluster's transport,
which it finds in its ``PluginContext`` with the node's TLS identity and advertise address;
one backed by an external service (etcd) talks to that. Timing knobs (ticks, elections) are
the provider's own plugin options; the swarm's ``swarm update --raft-*`` settings reach it
through ``tune`` as plain settings it may use or ignore.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from shoal.roles.transport import Handler, StreamHandler

#: Every RPC method a store provider serves to the other managers (``rpc_handlers``) is named
#: under this prefix; the kernel serves them only to manager certificates of this cluster whose
#: node it does not record as demoted or removed (``shoal.rpc.Access.STORE_PEER``).
STORE_PEER_METHOD_PREFIX = "/shoal.StorePeer/"


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
    recovered without it): its state is stale and it must leave and join again.

    Raised by ``leadership()`` (ending the iteration) when the provider finds out; the kernel
    then stops the store and refuses every call until the node leaves and joins again."""


@dataclass(frozen=True)
class MemberInfo:
    """One member of the group as this replica sees it (``node ls`` MANAGER STATUS)."""

    #: The manager's node ID (the kernel's name for it).
    node_id: str
    #: Where the manager listens for other managers (its advertise address).
    addr: str
    #: Counts towards quorum; a member being added is a non-voter until it caught up
    #: (``node ls`` shows ``Unknown``).
    voter: bool
    leader: bool
    #: Whether this replica heard from it recently (the leader's view is the authoritative one).
    reachable: bool
    #: The provider's own name for the member, shown by ``node inspect`` (``raft_id``) and
    #: ``info``; empty if it has none.
    store_id: str = ""


@runtime_checkable
class StateMachine(Protocol):
    """Implemented by the kernel; called by the store provider, always from the event loop."""

    def apply(self, index: int, entry: bytes) -> None:
        """Apply one committed entry. Called exactly once per index, in index order."""

    def snapshot(self) -> bytes:
        """The whole applied state, for the provider to persist or send to a lagging member."""

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
    api_version: ClassVar[int]  # 3

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
        creates an empty member that waits for the leader to add it (``add_member`` there)
        and send it the state (``swarm join`` with a manager token). ``force_new_cluster=True``
        reopens the existing state and makes this member the only one, keeping everything it
        had committed (``swarm init --force-new-cluster``). Otherwise the existing state is
        reopened, and it is an error to have none. State that is damaged, missing or
        inconsistent raises ``StoreOpenError`` with a one-line message: never open on fewer
        writes than were acknowledged.
        """

    async def propose(self, entry: bytes) -> int:
        """Commit ``entry`` and return its index once it is durable and applied.

        The state machine's ``apply`` for this index has run before this returns. Raises
        ``NotLeaderError`` when this member does not lead and wrote nothing, and
        ``StoreUnavailable`` when the entry's fate is unknown or it cannot be committed.
        """

    async def stop(self) -> None:
        """Stop serving and close files and connections. Acknowledged entries stay durable."""

    def status(self) -> dict[str, object]:
        """Free-form facts for ``info`` and benchmarks (term, indexes, members)."""

    # -- leadership ---------------------------------------------------------------------

    def is_leader(self) -> bool:
        """Whether this member currently leads (may accept proposals)."""

    def leadership(self) -> AsyncIterator[bool]:
        """Yield the current leadership at once, then each change (True = became leader).

        Must yield ``False`` as soon as this member may have lost leadership (the kernel
        runs the leader-only components exactly while it says ``True``). Raises
        ``MemberRemoved`` when the group no longer counts this member."""

    def leader(self) -> MemberInfo | None:
        """The member this replica believes leads, or None when it knows of none (the
        kernel forwards writes and joins to its ``addr``)."""

    async def transfer_leadership(self, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        """Leader only: hand leadership to another member (the store picks the best one) and
        return its node ID. Raises ``StoreUnavailable`` if no one took over within ``timeout``
        or there is no one to take over."""

    # -- membership ---------------------------------------------------------------------

    def members(self) -> list[MemberInfo]:
        """Every member (voters and non-voters) with this replica's view of it."""

    async def add_member(self, node_id: str, addr: str) -> None:
        """Leader only: add the manager ``node_id`` listening at ``addr``, whose store was
        started with ``join=True`` and already serves its ``rpc_handlers``. Returns once it
        counts towards quorum (a replicated log catches it up first). Idempotent: a retried
        join finds the work done. Raises ``StoreUnavailable``."""

    async def remove_member(self, node_id: str) -> None:
        """Leader only: remove a manager; returns once the removal is committed. Removing a
        node that is not a member does nothing."""

    # -- the provider's own business, through the kernel ----------------------------------

    def rpc_handlers(self) -> tuple[Mapping[str, Handler], Mapping[str, StreamHandler]]:
        """RPC methods (names under ``STORE_PEER_METHOD_PREFIX``) this member serves to the
        other managers over the node's transport; empty when members never call each other."""

    def tune(self, settings: Mapping[str, int]) -> None:
        """The swarm's consensus settings (``swarm update --raft-tick/--election-tick/
        --heartbeat-tick/--snapshot-interval``, keys ``tick_ms``, ``election_ticks``,
        ``heartbeat_ticks``, ``snapshot_interval``), at start and on every change. A store without such settings ignores them; raise
        ``ValueError`` for values it cannot use."""
