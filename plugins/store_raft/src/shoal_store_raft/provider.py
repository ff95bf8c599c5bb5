"""``RaftStore``: the asyncio driver that turns the pure Raft core into the kernel's store.

One event-loop callback (``_process``) drains the core's Ready: it writes every new entry and
the hard state to the WAL with a single fsync, sends messages, applies committed entries to
the state machine and resolves the ``propose`` futures. Proposals only append to the core and
schedule that callback, so every proposal made while the previous batch was being written
shares the next fsync (group commit). A separate task ticks the core on a timer.

The WAL write and fsync run on the loop thread on purpose: an fdatasync of an append costs
~0.15-0.7 ms here, less than a thread hop per batch, and it keeps Ready processing strictly
ordered without locks. Messages leave before the slow part of their Ready: a leader's Ready
with new entries sends its appends and leaves its fsync to the next loop turn, so the
transport puts them on the wire first and the followers write in parallel with the leader; a
Ready that sends acknowledgements and has entries to apply leaves applying to the next turn
(nothing else reads the core meanwhile).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import secrets
import shutil
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from shoal.plugin import (
    AtRestSealer,
    Handler,
    LeadershipFeed,
    MemberInfo,
    NotLeaderError,
    PeerIdentity,
    PluginContext,
    RPCError,
    StateMachine,
    StatusCode,
    StoreOpenError,
    StoreUnavailable,
    StreamHandler,
    TLSMaterial,
    TransportProvider,
)

from shoal_store_raft import snapfile
from shoal_store_raft.codec import CodecError, decode_messages, encode_messages
from shoal_store_raft.files import atomic_write
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.peernet import PeerNetwork
from shoal_store_raft.peers import PEERS_FILE, PeerBook
from shoal_store_raft.raft import (
    ConfChangeType,
    Config,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NotLeader,
    ProposalDropped,
    RaftCore,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from shoal_store_raft.spares import QuorumFirstSender
from shoal_store_raft.wal import WAL, WalState, list_segments

log = logging.getLogger("shoal.store.raft")

#: Where a deferred Ready resumes: at its WAL write (a leader's, after its appends went out) or
#: at applying (after the acknowledgements went out).
_PERSIST, _APPLY = "persist", "apply"
#: Where a leader's Ready resumes whose commit it applied at once: writing the commit index.
_RECORD = "record"
#: Where a Ready bringing a leader's snapshot resumes once the snapshot is installed.
_INSTALLED = "installed"

#: ``send(messages)``: hand messages to the transport (must not block; may drop on failure).
SendHook = Callable[[Sequence[Message]], None]
#: ``send(member_id, data)``: deliver encoded messages to one member (``PeerNetwork.send``).
SendFunc = Callable[[int, bytes], None]
#: How recently a delivery to a member must have succeeded for ``node ls`` to call it reachable.
REACHABLE_WITHIN = 3.0

MEMBER_FILE = "member.json"
#: Committed entries applied per loop turn, in bytes (at least one entry): a follower that
#: receives a backlog of entries, or a leader that commits several groups at once, applies it
#: in slices with the loop's other work (Raft ticks, heartbeats, RPCs) between them. At 10,000
#: tasks a backlog applied in one go held managers' loops for seconds: elections.
APPLY_SLICE_BYTES = 512 << 10
#: How long the encoding of a snapshot holds the loop before it lets the loop run (at least
#: one slice of the state machine's): a snapshot of 100,000 tasks is 0.2-0.6 s of encoding,
#: and taken in one go it held heartbeats, votes and writes for that long on every manager.
#: A timer that comes due during a step fires after the next one (that step was queued
#: first), so the loop can be held for two steps.
SNAPSHOT_STEP_SECONDS = 0.005

R = TypeVar("R")
#: ``blocking(fn)``: run ``fn`` (file writes and fsyncs) where it does not hold the loop, and
#: return its result; by default a thread of the loop's default executor.
BlockingRunner = Callable[[Callable[[], R]], Awaitable[R]]


@runtime_checkable
class SlicedSnapshots(Protocol):
    """A state machine that can hand its snapshot out in pieces (the kernel's object store)."""

    def snapshot_slices(self) -> Iterator[bytes]:
        """Pieces whose concatenation is ``snapshot()`` at the time of the call."""


@runtime_checkable
class SteppedRestore(Protocol):
    """A state machine that can restore a snapshot a step at a time (the kernel's object store)."""

    def restore_steps(self, index: int, data: bytes) -> Iterator[None]:
        """``restore``, done once the iterator is exhausted."""


class StoreStateError(StoreOpenError):
    """The on-disk state does not allow the requested start (missing, already present, or
    inconsistent)."""


def recovery_advice(state_dir: Path) -> str:
    """What an operator can do about a store that refuses its own state (one line)."""
    return (
        "the store refuses to start on it, as it may have lost acknowledged writes. To recover: "
        f"restore {state_dir} from a backup; or, with other healthy managers, demote and remove this "
        "node on the leader (`shoal node demote`, `shoal node rm`), delete this node's state directory "
        "and join it again; or, if the other managers lost their quorum, run "
        "`shoal swarm init --force-new-cluster` on the most up-to-date of them"
    )


def new_raft_id() -> int:
    """A random non-zero 63-bit member ID (fits every signed/unsigned 64-bit encoding)."""
    return secrets.randbits(63) or 1


def format_id(raft_id: int) -> str:
    return f"{raft_id:016x}" if raft_id else ""


@dataclass(frozen=True)
class RaftMember:
    """One Raft member by its member ID (the simulations and tests work at this level)."""

    member_id: int
    voter: bool
    leader: bool
    reachable: bool


@dataclass(frozen=True)
class PeerLink:
    """What the Raft store needs to talk to the other managers: the node's transport and TLS
    identity, who this node is and where it listens (from its ``PluginContext``)."""

    transport: TransportProvider
    tls: Callable[[], TLSMaterial | None]
    node_id: str
    advertise_addr: str
    #: The kernel's check of a peer (``PluginContext.authorize_peer``); direct links need it.
    authorize: Callable[[str, PeerIdentity | None], None] | None = None


class RaftStore:
    """The ``raft`` store provider (see ``shoal.roles.StoreProvider``)."""

    role: ClassVar[str] = "store"
    api_version: ClassVar[int] = 3

    def __init__(
        self,
        state_dir: Path,
        options: RaftOptions | None = None,
        *,
        send: SendHook | None = None,
        rng_seed: int | None = None,
        link: PeerLink | None = None,
        sealer: AtRestSealer | None = None,
        blocking: BlockingRunner[Any] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        #: Where snapshot files are written and synced (a simulation on virtual time passes
        #: one that runs them at once, so a seed stays one run).
        self._blocking: BlockingRunner[Any] = blocking or _in_thread
        #: The snapshot being encoded and written, if any (at most one at a time).
        self._snapshotting: asyncio.Task[None] | None = None
        #: A leader's snapshot being installed, if any (its Ready is ``_deferred`` meanwhile).
        self._installing: asyncio.Task[None] | None = None
        #: Encrypts every WAL record and snapshot (the manager's data key; None: in clear).
        self.sealer = sealer
        self.options = options or RaftOptions()
        #: The daemon's own ``--plugin-opt store.snapshot-interval``, which wins over the swarm's.
        self.own_snapshot_interval = False
        self._send_hook = send
        #: How to reach the other managers (None: a test wires the network itself).
        self.link = link
        #: Member ID -> node and address (``peers``), opened by ``start``.
        self.book = PeerBook(None)
        #: Our network to the other members, once started with a ``link``.
        self.net: PeerNetwork | None = None
        self._rng = random.Random(secrets.randbits(64) if rng_seed is None else rng_seed)
        self._machine: StateMachine | None = None
        self._core: RaftCore | None = None
        self._wal: WAL | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._futures: dict[int, tuple[int, asyncio.Future[int]]] = {}
        #: ``leadership()``'s subscribers; also says whether the others removed this member.
        self._leadership = LeadershipFeed()
        self._leader = False
        self._scheduled = False
        #: A Ready whose messages went out and whose rest (from the stage named) runs on the
        #: next loop turn; nothing reads the core meanwhile.
        self._deferred: tuple[Ready, str] | None = None
        self._closed = False
        self._failed: BaseException | None = None
        self._applied = 0
        self._snapshot_index = 0
        #: ``WAL.written`` when the last snapshot started (or a leader's was installed): the
        #: next one is due once ``snapshot_wal_bytes`` more were written.
        self._wal_mark = 0
        self._last_heard: dict[int, float] = {}
        #: Quorum-first replication, once ``attach`` connected the kernel's network.
        self._sender: QuorumFirstSender | None = None

    @classmethod
    def from_context(cls, context: PluginContext) -> RaftStore:
        link = None
        if context.transport is not None:
            link = PeerLink(
                context.transport,
                context.node_tls,
                context.node_id,
                context.advertise_addr,
                authorize=context.authorize_peer,
            )
        store = cls(context.state_dir, RaftOptions.parse(context.options), link=link, sealer=context.sealer)
        store.own_snapshot_interval = "snapshot-interval" in context.options
        return store

    # ------------------------------------------------------------------ paths

    @property
    def wal_dir(self) -> Path:
        return self.state_dir / "wal"

    @property
    def snap_dir(self) -> Path:
        return self.state_dir / "snap"

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        machine: StateMachine,
        *,
        bootstrap: bool,
        join: bool = False,
        force_new_cluster: bool = False,
    ) -> None:
        if self._core is not None or self._closed:
            raise RuntimeError("RaftStore.start called twice; build a new provider to restart")
        if bootstrap or join:
            self._bootstrap(alone=bootstrap)
        elif force_new_cluster:
            self._force_new_cluster(machine)
        self._open(machine)
        self._connect(forget_others=force_new_cluster)
        if self.net is not None:
            await self.net.start_direct(self.options.direct_port)

    def _connect(self, *, forget_others: bool) -> None:
        """Open the member book and, given a link, the network to the other members."""
        core = self._core
        assert core is not None
        self.book = PeerBook(self.state_dir / PEERS_FILE)
        if forget_others:
            self.book.keep_only(core.id)
        link = self.link
        if link is None:
            return
        self.book.learn(core.id, link.node_id, link.advertise_addr)

        def tls() -> TLSMaterial:
            material = link.tls()
            if material is None:
                raise RPCError(StatusCode.UNAVAILABLE, "this node has no TLS identity yet")
            return material

        self.net = PeerNetwork(
            replica=self,
            book=self.book,
            transport=link.transport,
            tls=tls,
            node_id=link.node_id,
            advertise_addr=link.advertise_addr,
            on_removed=self._on_removed,
            authorize=link.authorize if self.options.direct_links else None,
        )
        self.attach(self.net.send)

    def _open(self, machine: StateMachine) -> None:
        raft_id = self._read_member()
        try:
            snap = snapfile.load_latest(self.snap_dir, self.sealer)
            wal, walstate = WAL.open(
                self.wal_dir,
                self.options.segment_bytes,
                verify=lambda state: self._check(snap, state),
                sealer=self.sealer,
            )
        except StoreOpenError as exc:
            raise type(exc)(f"{exc}; {recovery_advice(self.state_dir)}") from None
        try:
            meta = walstate.snapshot
            if snap is not None and snap.meta.index >= meta.index:
                meta = snap.meta
            entries = [e for e in walstate.entries if e.index > meta.index]
            if snap is not None:
                machine.restore(snap.meta.index, snap.data)
            # Membership changes take effect when applied (as in etcd), so a restart starts from
            # the snapshot's membership and replays the committed ones. The commit index that
            # covers a membership change is made durable before the change is applied
            # (``_process``), so a restart never forgets an applied change.
            voters, learners = meta.voters, meta.learners
            opts = self.options
            core = RaftCore(
                raft_id,
                voters=voters,
                learners=learners,
                rng=self._rng,
                config=Config(
                    election_ticks=opts.election_ticks,
                    heartbeat_ticks=opts.heartbeat_ticks,
                    max_committed_bytes_per_ready=APPLY_SLICE_BYTES,
                ),
                hard_state=walstate.hard_state,
                snapshot=meta,
                entries=entries,
            )
            if snap is not None:
                core.compact(snap)
        except BaseException:
            wal.close()
            raise
        self._machine, self._core, self._wal = machine, core, wal
        self._applied = self._snapshot_index = meta.index
        self._loop = asyncio.get_running_loop()
        if core.is_single_voter():
            core.campaign()  # the only voter: no one to wait for, lead at once
        self._process(defer=False)  # replay committed entries (and, alone, commit everything durable)
        if wal.holds_clear_records and self._applied > self._snapshot_index:
            self._take_snapshot()  # encrypt what was written in clear; compaction drops the rest
        self._ticker = self._loop.create_task(self._tick_loop(), name="shoal-raft-ticker")
        log.info(
            "raft store started: member %s, term %d, applied %d, leader %s",
            format_id(raft_id),
            core.term,
            self._applied,
            format_id(core.lead) or "none",
        )

    def _check(self, snap: Snapshot | None, state: WalState) -> None:
        """Refuse a WAL that the newest snapshot file does not complete (before the WAL writes
        anything: a refused start changes nothing on disk)."""
        meta = state.snapshot
        if snap is not None and snap.meta.index >= meta.index:
            meta = snap.meta
        elif meta.index > 0:
            raise StoreStateError(
                f"the raft WAL in {self.wal_dir} refers to a snapshot at index {meta.index} "
                f"but {self.snap_dir} has no such snapshot file"
            )
        entries = [e for e in state.entries if e.index > meta.index]
        if entries and entries[0].index != meta.index + 1:
            raise StoreStateError(
                f"the raft WAL in {self.wal_dir} is missing entries {meta.index + 1}..{entries[0].index - 1}"
            )

    def _bootstrap(self, *, alone: bool) -> None:
        """A new member: the only voter of a new group (``alone``), or an empty member that
        learns the membership and the state from the leader that adds it."""
        if (self.state_dir / MEMBER_FILE).exists() or list_segments(self.wal_dir):
            raise StoreStateError(
                f"raft state already exists in {self.state_dir}; start without bootstrap to reopen it, "
                "or remove that directory to create a new group"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        raft_id = new_raft_id()
        voters = (raft_id,) if alone else ()
        WAL.create(self.wal_dir, SnapshotMeta(0, 0, voters), HardState(), sealer=self.sealer).close()
        # The member file goes last: its presence means "a complete bootstrap happened".
        atomic_write(self.state_dir / MEMBER_FILE, json.dumps({"raft_id": format_id(raft_id)}).encode())

    def _force_new_cluster(self, machine: StateMachine) -> None:
        """Rewrite the durable state as a one-member group holding everything committed.

        The state machine is rebuilt up to the commit index and saved as a snapshot whose
        membership is this member alone; the old WAL (with any uncommitted suffix, which no
        quorum ever acknowledged) is kept aside as ``wal.before-force-new-cluster-*``.
        """
        self._open(machine)
        core, wal = self._core, self._wal
        assert core is not None and wal is not None
        self._process(defer=False)  # apply everything committed; nothing is sent (no network attached)
        if self._snapshotting is not None:  # not started: the snapshot below replaces it (same name)
            self._snapshotting.cancel()
            self._snapshotting = None
        index = self._applied
        term = core.term_at(index) or core.term
        snap = Snapshot(SnapshotMeta(index, term, (core.id,)), machine.snapshot())
        hard = HardState(core.term + 1, 0, index)
        wal.close()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._core = self._wal = None
        snapfile.save(self.snap_dir, snap, self.sealer)
        aside = self.state_dir / f"wal.before-force-new-cluster-{int(time.time())}"
        shutil.move(str(self.wal_dir), aside)
        WAL.create(self.wal_dir, snap.meta, hard, sealer=self.sealer).close()
        snapfile.prune(self.snap_dir, index)
        log.warning(
            "raft store: forced a new one-member group at index %d (old WAL kept in %s)", index, aside
        )

    def _read_member(self) -> int:
        path = self.state_dir / MEMBER_FILE
        try:
            doc = json.loads(path.read_text())
            return int(doc["raft_id"], 16)
        except FileNotFoundError:
            raise StoreStateError(
                f"no raft state in {self.state_dir}: this manager was never initialised "
                "(bootstrap a new group with `swarm init`, or join an existing one)"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreStateError(
                f"raft member file {path} is unreadable ({exc}); {recovery_advice(self.state_dir)}"
            ) from None

    async def stop(self) -> None:
        if self._closed:
            return
        if self._core is None:
            self._closed = True
            self._leadership.close()
            return
        if self._installing is not None:  # it finishes its Ready itself
            await asyncio.gather(self._installing, return_exceptions=True)
        self._finish_deferred(defer=False)  # persist and acknowledge what was already accepted
        self._closed = True
        if self._sender is not None:
            self._sender.close()
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
        self._fail_pending(StoreUnavailable("the store is stopped; the write may not have been committed"))
        self._set_leader(False)
        self._leadership.close()
        if self._snapshotting is not None:  # finish it: a restart then replays less
            await asyncio.gather(self._snapshotting, return_exceptions=True)
        if self._wal is not None:
            self._wal.close()
        if self.net is not None:
            await self.net.close()

    # ------------------------------------------------------------------ proposals

    async def propose(self, entry: bytes) -> int:
        return await self.submit(entry)

    def submit(self, entry: bytes) -> asyncio.Future[int]:
        """``propose`` without awaiting: append ``entry`` now and return the future of its
        index, resolved once it is committed and applied (the kernel's group commit proposes a
        lone write this way in the loop turn that made it, rather than a turn later from a
        task of its own). Raises what ``propose`` raises when nothing was appended."""
        core = self._core
        if core is None or self._closed:
            raise StoreUnavailable("the store is stopped; start the daemon's store before writing")
        if self._failed is not None:
            raise StoreUnavailable(f"the store stopped after a fatal error: {self._failed}")
        try:
            index = core.propose(entry)
        except NotLeader as exc:
            leader = format_id(exc.lead)
            where = f"the leader is {leader}" if leader else "there is no leader right now"
            raise NotLeaderError(f"this node is not the leader ({where}); retry against the leader") from None
        except ProposalDropped as exc:
            raise StoreUnavailable(f"the write was refused: {exc}; retry it") from None
        assert self._loop is not None
        fut: asyncio.Future[int] = self._loop.create_future()
        self._futures[index] = (core.term, fut)
        self._schedule()
        return fut

    def is_leader(self) -> bool:
        return self._leader

    def leadership(self) -> AsyncIterator[bool]:
        return self._leadership.subscribe(lambda: self._leader)

    def status(self) -> dict[str, object]:
        core = self._core
        if core is None:
            return {"state": "stopped", "state_dir": str(self.state_dir)}
        return {
            "state": "failed" if self._failed else ("stopped" if self._closed else "running"),
            "raft_id": format_id(core.id),
            "role": core.role.name.lower(),
            "term": core.term,
            "leader": format_id(core.lead),
            "commit_index": core.commit,
            "applied_index": self._applied,
            "first_index": core.first_index(),
            "last_index": core.last_index(),
            "snapshot_index": self._snapshot_index,
            "members": [format_id(v) for v in core.voters],
            "learners": [format_id(v) for v in core.learners],
            # The followers a leader sends new entries to at once (see ``spares``).
            "quorum_set": sorted(format_id(v) for v in self._sender.quorum_set)
            if self._sender is not None and core.is_leader()
            else [],
            "spare_batch_ms": self.options.spare_batch_ms,
            "direct_links": self.net.link_status() if self.net is not None else {},
            "wal_syncs": self._wal.syncs if self._wal else 0,
            "tick_ms": self.options.tick_ms,
            "election_ticks": core.config.election_ticks,
            "heartbeat_ticks": core.config.heartbeat_ticks,
        }

    # ------------------------------------------------------------------ network hooks

    def set_send(self, send: SendHook | None) -> None:
        """Install a send function taking decoded messages (simulations and tests)."""
        self._send_hook = send

    def attach(self, send: SendFunc) -> None:
        """Send through ``send(member_id, data)`` (``PeerNetwork.send``): messages go out
        encoded, one batch per peer per Ready."""

        def send_batch(peer: int, batch: list[Message]) -> None:
            send(peer, encode_messages(batch))

        sender = self._sender = QuorumFirstSender(send_batch, self.options.spare_batch_ms / 1000)

        def send_encoded(messages: Sequence[Message]) -> None:
            by_peer: dict[int, list[Message]] = defaultdict(list)
            for m in messages:
                by_peer[m.to].append(m)
            core = self._core
            assert core is not None  # only a Ready of a started core sends
            sender.send(by_peer, leader_id=core.id if core.is_leader() else 0, voters=core.voters)

        self._send_hook = send_encoded

    def receive(self, data: bytes) -> None:
        """Feed what a peer sent into the core (called by the network, on the loop)."""
        try:
            messages = decode_messages(data)
        except CodecError as exc:
            log.warning("raft store: dropped an undecodable message batch: %s", exc)
            return
        for message in messages:
            self.step(message)

    def step(self, message: Message) -> None:
        """Feed one decoded message into the core."""
        core = self._core
        if core is None or self._closed or self._failed is not None or message.to != core.id:
            return
        self._last_heard[message.frm] = self._now()
        if message.type == MsgType.APP_RESP and self._sender is not None:
            self._sender.acknowledged(message)
        core.step(message)
        self._schedule()

    def _now(self) -> float:
        """The event loop's clock (a simulation's virtual clock runs the same code)."""
        return self._loop.time() if self._loop is not None else asyncio.get_event_loop().time()

    def report_unreachable(self, member_id: int) -> None:
        """The network could not deliver to ``member_id``: probe it again from its match."""
        if self._core is not None and not self._closed:
            self._core.report_unreachable(member_id)

    def _on_removed(self, message: str) -> None:
        """A peer said this member is no longer one of the group: ``leadership()`` raises
        ``MemberRemoved`` and the kernel stops the store."""
        self._leadership.member_removed(message)

    def rpc_handlers(self) -> tuple[Mapping[str, Handler], Mapping[str, StreamHandler]]:
        if self.net is None:
            return {}, {}
        return self.net.handlers()

    # ------------------------------------------------------------------ membership (kernel)

    def _member_info(self, member: RaftMember) -> MemberInfo:
        peer = self.book.get(member.member_id)
        reachable = member.reachable or (
            self.net is not None and self.net.reachable(member.member_id, REACHABLE_WITHIN)
        )
        return MemberInfo(
            node_id=peer.node_id if peer is not None else "",
            addr=peer.addr if peer is not None else "",
            voter=member.voter,
            leader=member.leader,
            reachable=reachable,
            store_id=format_id(member.member_id),
        )

    def members(self) -> list[MemberInfo]:
        return [self._member_info(m) for m in self.raft_members()]

    def leader(self) -> MemberInfo | None:
        lead = self.leader_id()
        if not lead:
            return None
        peer = self.book.get(lead)
        return MemberInfo(
            node_id=peer.node_id if peer is not None else "",
            addr=peer.addr if peer is not None else "",
            voter=True,
            leader=True,
            reachable=True,
            store_id=format_id(lead),
        )

    async def add_member(self, node_id: str, addr: str) -> None:
        """Ask the manager at ``addr`` for its member ID (``RaftHello``), then add it."""
        self._require_leader()
        if self.net is None:
            raise StoreUnavailable("this raft member has no network to reach the new manager")
        try:
            hello = await self.net.hello(addr)
        except RPCError as exc:
            raise StoreUnavailable(f"cannot reach the new manager at {addr}: {exc.message}") from None
        if hello.from_node and hello.from_node != node_id:
            raise StoreUnavailable(
                f"the manager at {addr} is node {hello.from_node}, not {node_id}; check its advertise address"
            )
        self.book.learn(hello.from_member, node_id, addr)
        await self.add_raft_member(hello.from_member)

    async def remove_member(self, node_id: str) -> None:
        core = self._require_leader()
        for member_id in self.book.by_node(node_id):
            if member_id in core.voters or member_id in core.learners:
                await self.remove_raft_member(member_id)

    async def transfer_leadership(self, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        lead = await self.transfer_to(0, timeout)
        peer = self.book.get(lead)
        return peer.node_id if peer is not None else format_id(lead)

    # ------------------------------------------------------------------ membership (raft)

    @property
    def member_id(self) -> int:
        """This member's ID; 0 before ``start`` created or opened the state."""
        return self._core.id if self._core is not None else 0

    def is_member(self, member_id: int) -> bool:
        core = self._core
        return core is not None and (member_id in core.voters or member_id in core.learners)

    def leader_id(self) -> int:
        return self._core.lead if self._core is not None and not self._closed else 0

    def raft_members(self) -> list[RaftMember]:
        core = self._core
        if core is None:
            return []
        fresh = 2 * self.options.election_ticks * self.options.tick_ms / 1000
        now = self._now()
        result = []
        for member in sorted(set(core.voters) | set(core.learners)):
            heard = self._last_heard.get(member)
            reachable = member == core.id or (heard is not None and now - heard < fresh)
            result.append(RaftMember(member, member in core.voters, member == core.lead, reachable))
        return result

    async def add_raft_member(self, member_id: int) -> None:
        """Add ``member_id`` as a learner, wait until it caught up, then make it a voter."""
        core = self._require_leader()
        if member_id in core.voters:
            return
        if member_id not in core.learners:
            await self._conf_change(ConfChangeType.ADD_LEARNER, member_id)
        # Catch up first: a voter that lags would slow every commit (or, with two members,
        # stop them) until it had the whole log.
        deadline = self._now() + self.options.catch_up_seconds
        while True:
            core = self._require_leader()
            pr = core.progress(member_id)
            if pr is not None and pr.match >= core.commit:
                break
            if self._now() > deadline:
                raise StoreUnavailable(
                    f"the new manager (raft member {format_id(member_id)}) did not catch up with the "
                    f"log within {self.options.catch_up_seconds} s; check that the managers can reach it"
                )
            await asyncio.sleep(self.options.tick_ms / 1000)
        await self._conf_change(ConfChangeType.ADD_VOTER, member_id)

    async def remove_raft_member(self, member_id: int) -> None:
        core = self._require_leader()
        if member_id not in core.voters and member_id not in core.learners:
            return
        await self._conf_change(ConfChangeType.REMOVE, member_id)

    async def transfer_to(self, member_id: int = 0, timeout: float = 10.0) -> int:  # noqa: ASYNC109
        """Hand leadership to ``member_id`` (0: the most up-to-date voter); returns the new
        leader's member ID."""
        core = self._require_leader()
        if not member_id:
            candidates = [
                (pr.match if (pr := core.progress(v)) is not None else 0, v)
                for v in core.voters
                if v != core.id
            ]
            if not candidates:
                raise StoreUnavailable("there is no other manager to hand leadership to")
            member_id = max(candidates)[1]
        core.transfer_leadership(member_id)
        self._schedule()
        deadline = self._now() + timeout
        while self._now() < deadline:
            await asyncio.sleep(self.options.tick_ms / 1000 / 2)
            lead = self.leader_id()
            if lead and lead != core.id:
                return lead
        raise StoreUnavailable(f"leadership was not transferred within {timeout:g} s; retry")

    def tune(self, settings: Mapping[str, int]) -> None:
        """The swarm's ``swarm update --raft-*`` timing and ``--snapshot-interval``; keys this
        store does not know are ignored, a missing one keeps its value (and the daemon's own
        ``store.snapshot-interval`` option wins over the swarm's)."""
        opts = self.options
        interval = settings.get("snapshot_interval", opts.snapshot_interval)
        if self.own_snapshot_interval:
            interval = opts.snapshot_interval
        if interval < 1:
            raise ValueError(f"raft snapshot interval: need at least 1 entry, got {interval}")
        self.options = opts = dataclasses.replace(opts, snapshot_interval=interval)
        self.set_timing(
            tick_ms=settings.get("tick_ms", opts.tick_ms),
            election_ticks=settings.get("election_ticks", opts.election_ticks),
            heartbeat_ticks=settings.get("heartbeat_ticks", opts.heartbeat_ticks),
        )

    def set_timing(self, *, tick_ms: int, election_ticks: int, heartbeat_ticks: int) -> None:
        if tick_ms < 1 or heartbeat_ticks < 1 or election_ticks <= heartbeat_ticks:
            raise ValueError("raft timing: need tick >= 1 ms and 1 <= heartbeat ticks < election ticks")
        self.options = dataclasses.replace(
            self.options, tick_ms=tick_ms, election_ticks=election_ticks, heartbeat_ticks=heartbeat_ticks
        )
        if self._core is not None:
            self._core.config = dataclasses.replace(
                self._core.config, election_ticks=election_ticks, heartbeat_ticks=heartbeat_ticks
            )

    def _require_leader(self) -> RaftCore:
        core = self._core
        if core is None or self._closed or self._failed is not None or not core.is_leader():
            raise StoreUnavailable("this member is not the leader; membership changes go to the leader")
        return core

    async def _conf_change(self, change: ConfChangeType, member_id: int) -> None:
        """Propose one membership change and wait until it is applied, retrying while
        another change is still in flight."""
        deadline = self._now() + 30
        while True:
            core = self._require_leader()
            if _already_applied(core, change, member_id):
                return  # e.g. a retried join whose first attempt finished meanwhile
            try:
                index = core.propose_conf_change(change, member_id)
                break
            except ProposalDropped as exc:
                if self._now() > deadline:
                    raise StoreUnavailable(f"the membership change was refused: {exc}") from None
                await asyncio.sleep(self.options.tick_ms / 1000)
        assert self._loop is not None
        fut: asyncio.Future[int] = self._loop.create_future()
        self._futures[index] = (core.term, fut)
        self._schedule()
        await fut

    # ------------------------------------------------------------------ the driver

    async def _tick_loop(self) -> None:
        core = self._core
        assert core is not None
        while True:
            await asyncio.sleep(self.options.tick_ms / 1000)  # re-read: ``tune`` may change it
            core.tick()
            if core.has_ready():
                self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._run_process)

    def _run_process(self) -> None:
        self._scheduled = False
        if self._closed or self._failed is not None:
            return
        if self._deferred is not None:  # it finishes first, then processes what came meanwhile
            if self._installing is not None:
                self._answer_heartbeats()
            return
        try:
            self._process()
        except Exception as exc:  # a failed write or apply stops the store
            self._fail(exc)

    def _defer(self, rd: Ready, stage: str) -> None:
        """Finish ``rd`` from ``stage`` on the next loop turn: the messages just handed to the
        network go out first (the transport writes them when the loop runs its tasks), so
        the followers start writing while the leader fsyncs, and an acknowledgement leaves
        before the follower applies."""
        assert self._loop is not None
        self._deferred = (rd, stage)
        self._loop.call_soon(self._finish_deferred)

    def _finish_deferred(self, defer: bool = True) -> None:
        """Finish the deferred Ready, if any, then process what came meanwhile (``stop`` runs
        it with ``defer=False`` to finish everything at once)."""
        item, self._deferred = self._deferred, None
        if self._closed or self._failed is not None:
            return
        try:
            applied = False
            if item is not None:
                self._finish_stage(*item)
                applied = bool(item[0].committed)
            self._process(defer, applied=applied)
        except Exception as exc:  # a failed write or apply stops the store
            self._fail(exc)

    def _finish_stage(self, rd: Ready, stage: str) -> None:
        if stage == _RECORD:
            self._persist(rd, early=True)
            self._apply_and_advance(rd, applied=True)
            return
        if stage == _PERSIST:
            self._persist(rd, early=True)
        elif stage == _INSTALLED:
            self._persist(rd, early=False)
        self._apply_and_advance(rd)

    def _process(self, defer: bool = True, *, applied: bool = False) -> None:
        """Drain the core's Ready. With ``defer``, a slice of committed entries just applied
        (``applied``) ends this turn when more are waiting: the rest is applied on the next
        loop turn, so a backlog never holds the loop (``stop`` and replay at open apply all)."""
        core = self._core
        assert core is not None
        while core.has_ready():
            if defer and applied and core.applied < core.commit:
                self._schedule()
                return
            rd = core.ready()
            applied = bool(rd.committed)
            if rd.snapshot is not None:
                if defer:
                    self._install_later(rd)
                    return
                self._install_snapshot(rd.snapshot)
            # A leader's appends promise nothing about its own disk (it counts itself towards a
            # commit only once ``advance`` saw its entries durable), so it sends them before its
            # fsync and the followers write in parallel with it (Raft thesis §10.2.1). Anyone
            # else's messages (votes, acknowledgements) may only leave after the write.
            early = core.is_leader() and rd.soft_state is None and rd.snapshot is None
            if early and rd.messages and self._send_hook is not None:
                self._send_hook(rd.messages)
                if rd.entries and defer:
                    self._defer(rd, _PERSIST)  # the fsync blocks the loop: appends first
                    return
            if early and defer and rd.committed and not rd.entries and not rd.must_sync and not _conf(rd):
                # A leader's commit: apply it now (which answers its writers), and write the new
                # commit index on the next loop turn, after the answers. That record is not
                # synced and promises nothing: the entries are durable on a quorum, and a leader
                # restarting with an older commit index learns the newer one again (etcd's
                # leader, too, applies while it writes).
                self._apply(rd)
                self._defer(rd, _RECORD)
                return
            self._persist(rd, early)
            if defer and rd.committed and rd.messages and not early:
                self._defer(rd, _APPLY)  # the acknowledgement first, then apply
                return
            self._apply_and_advance(rd)

    def _persist(self, rd: Ready, early: bool) -> None:
        wal = self._wal
        assert wal is not None
        if rd.entries or rd.hard_state is not None:
            wal.save(rd.entries, rd.hard_state, rd.must_sync or _conf(rd))
        if not early and rd.messages and self._send_hook is not None:
            self._send_hook(rd.messages)

    def _apply_and_advance(self, rd: Ready, applied: bool = False) -> None:
        """``applied``: ``rd``'s committed entries were applied already (``_RECORD``)."""
        core = self._core
        assert core is not None
        if rd.committed and not applied:
            self._apply(rd)
        core.advance(rd)
        if rd.soft_state is not None:
            self._set_leader(rd.soft_state.role == Role.LEADER)
        if self._snapshot_due():
            self._take_snapshot()

    def _snapshot_due(self) -> bool:
        """Whether ``snapshot_interval`` entries were applied, or ``snapshot_wal_bytes`` bytes
        written to the WAL, since the last snapshot (and there is anything new to snapshot)."""
        new = self._applied - self._snapshot_index
        if new >= self.options.snapshot_interval:
            return True
        wal = self._wal
        return new > 0 and wal is not None and wal.written - self._wal_mark >= self.options.snapshot_wal_bytes

    def _apply(self, rd: Ready) -> None:
        machine, core, futures = self._machine, self._core, self._futures
        assert machine is not None and core is not None
        for e in rd.committed:
            if e.kind == EntryKind.NORMAL:
                machine.apply(e.index, e.data)
            self._applied = e.index
            if futures:
                waiter = futures.pop(e.index, None)
                if waiter is not None:
                    term, fut = waiter
                    if fut.done():
                        continue
                    if term == e.term:
                        fut.set_result(e.index)
                    else:
                        fut.set_exception(
                            StoreUnavailable(
                                "leadership changed before the write committed and it was replaced; retry it"
                            )
                        )

    def _install_snapshot(self, snap: Snapshot) -> None:
        """A leader sent us its state: make it durable, then load it, at once (``stop`` and the
        replay at open; the loop's installs go through ``_install_later``)."""
        assert self._machine is not None
        snapfile.save(self.snap_dir, snap, self.sealer)
        self._mark_installed(snap)
        self._machine.restore(snap.meta.index, snap.data)
        self._loaded(snap)

    def _install_later(self, rd: Ready) -> None:
        """``rd`` brings a leader's snapshot: install it in the background (the file written
        off the loop, the state machine restored a step at a time when it can) and only then
        finish ``rd``, whose acknowledgement says the snapshot is durable. Nothing else of the
        core is processed meanwhile. At 100,000 tasks an install held a follower's loop for
        0.3-0.7 s (restoring) plus the write of a 23 MB file."""
        assert rd.snapshot is not None and self._loop is not None and self._wal is not None
        # A heartbeat stepped in before this Ready was taken (with the snapshot's last chunk)
        # is answered now too, not with the snapshot's acknowledgement.
        term = self._wal.hard_state.term
        answers = [m for m in rd.messages if m.type == MsgType.HEARTBEAT_RESP and m.term == term]
        if answers and self._send_hook is not None:
            rd.messages = [m for m in rd.messages if m.type != MsgType.HEARTBEAT_RESP or m.term != term]
            self._send_hook(answers)
        self._deferred = (rd, _INSTALLED)
        self._installing = self._loop.create_task(
            self._install_in_steps(rd.snapshot), name="shoal-raft-install"
        )

    async def _install_in_steps(self, snap: Snapshot) -> None:
        machine = self._machine
        assert machine is not None
        try:
            directory, sealer = self.snap_dir, self.sealer
            await self._blocking(lambda: snapfile.save(directory, snap, sealer))
            self._mark_installed(snap)
            if isinstance(machine, SteppedRestore):
                clock = time.perf_counter
                until = clock() + SNAPSHOT_STEP_SECONDS
                for _ in machine.restore_steps(snap.meta.index, snap.data):
                    if clock() >= until:
                        await asyncio.sleep(0)
                        until = clock() + SNAPSHOT_STEP_SECONDS
            else:
                machine.restore(snap.meta.index, snap.data)
            self._loaded(snap)
        except Exception as exc:  # as a failed write or apply: the store stops
            self._fail(exc)
            return
        finally:
            if self._installing is asyncio.current_task():
                self._installing = None
        self._finish_deferred()

    def _answer_heartbeats(self) -> None:
        """While a leader's snapshot is installed, answer its heartbeats (Raft lets a follower
        keep acknowledging heartbeats meanwhile): at 100,000 tasks an install takes 0.3-1.3 s,
        longer than an election timeout, and a leader that heard nothing from a follower
        that long counts it inactive (with two followers installing at once it steps down)
        and confirms no read through it. Only responses at the term already durable go out;
        everything else waits for the install, as before."""
        core, wal, send = self._core, self._wal, self._send_hook
        assert core is not None and wal is not None
        if send is None:
            return
        answers = core.take_heartbeat_responses(wal.hard_state.term)
        if answers:
            send(answers)

    def _mark_installed(self, snap: Snapshot) -> None:
        """``snap``'s file is durable: the WAL starts after it (a snapshot of our own still
        under way, older, is dropped when it ends)."""
        assert self._wal is not None
        self._wal.save_snapshot(snap.meta)
        self._applied = self._snapshot_index = snap.meta.index
        self._wal_mark = self._wal.written

    def _loaded(self, snap: Snapshot) -> None:
        """The state machine holds ``snap``: fail the writes it replaced, prune older files."""
        self._fail_pending(
            StoreUnavailable("the store was replaced by the leader's snapshot; retry the write"),
            up_to=snap.meta.index,
        )
        snapfile.prune(self.snap_dir, snap.meta.index)

    def _take_snapshot(self) -> None:
        """Start a snapshot of the state machine at the applied index, unless one is under
        way: its bytes are encoded a slice at a time between the loop's other work, written
        and synced off the loop, and only then is the WAL marked, released and the log
        compacted (``_snapshot_saved``). At 100,000 tasks, encoding and writing in one go
        held the loop for 0.6 s and more on every manager."""
        if self._snapshotting is not None:
            return
        core, machine, loop = self._core, self._machine, self._loop
        assert core is not None and machine is not None and loop is not None
        index = self._applied
        term = core.term_at(index)
        assert term is not None
        meta = SnapshotMeta(index, term, core.voters, core.learners)  # the membership applied
        assert self._wal is not None
        self._wal_mark = self._wal.written
        pieces = (
            machine.snapshot_slices() if isinstance(machine, SlicedSnapshots) else iter((machine.snapshot(),))
        )
        self._snapshotting = loop.create_task(self._write_snapshot(meta, pieces), name="shoal-raft-snapshot")

    async def _write_snapshot(self, meta: SnapshotMeta, pieces: Iterator[bytes]) -> None:
        try:
            parts: list[bytes] = []
            clock = time.perf_counter
            until = clock() + SNAPSHOT_STEP_SECONDS
            for part in pieces:
                parts.append(part)
                if clock() >= until:
                    await asyncio.sleep(0)
                    until = clock() + SNAPSHOT_STEP_SECONDS
            directory, sealer = self.snap_dir, self.sealer

            def save() -> Snapshot:
                snap = Snapshot(meta, b"".join(parts))
                snapfile.save(directory, snap, sealer)
                return snap

            snap = await self._blocking(save)
            if self._failed is None:
                self._snapshot_saved(snap)
        except Exception as exc:
            if meta.index <= self._snapshot_index:
                # A leader's newer snapshot was installed meanwhile (its pruning may have taken
                # this one's temporary file): nothing of this one is needed any more.
                log.debug("raft snapshot at index %d dropped, overtaken: %s", meta.index, exc)
            else:  # a failed snapshot write stops the store, as a failed WAL write does
                self._fail(exc)
        finally:
            if self._snapshotting is asyncio.current_task():
                self._snapshotting = None

    def _snapshot_saved(self, snap: Snapshot) -> None:
        """``snap`` is durable: mark it in the WAL, release the segments and the log before it,
        and prune older snapshot files (unless a leader's newer snapshot was installed
        meanwhile, which did all that for its own)."""
        core, wal = self._core, self._wal
        assert core is not None and wal is not None
        index = snap.meta.index
        if index <= self._snapshot_index:
            snapfile.prune(self.snap_dir, self._snapshot_index)
            return
        wal.save_snapshot(snap.meta)
        released = wal.release_to(index)
        snapfile.prune(self.snap_dir, index)
        core.compact(snap)
        self._snapshot_index = index
        log.debug("raft snapshot at index %d; released %d WAL segment(s)", index, len(released))

    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        if self._sender is not None:
            self._sender.reset()
        if not leader:
            self._fail_pending(
                StoreUnavailable(
                    "this node lost leadership; the write may or may not have been committed, check and retry"
                )
            )
        self._leadership.changed(leader)

    def _fail_pending(self, exc: StoreUnavailable, up_to: int | None = None) -> None:
        for index in list(self._futures):
            if up_to is None or index <= up_to:
                _, fut = self._futures.pop(index)
                if not fut.done():
                    fut.set_exception(exc)

    def _fail(self, exc: BaseException) -> None:
        log.error("raft store stopped after a fatal error: %s", exc, exc_info=exc)
        self._failed = exc
        self._fail_pending(StoreUnavailable(f"the store stopped after a fatal error: {exc}"))
        self._set_leader(False)
        if self._ticker is not None:
            self._ticker.cancel()


async def _in_thread(fn: Callable[[], R]) -> R:
    """Run ``fn`` on a thread of the loop's default executor (file writes and fsyncs release
    the GIL, so the loop runs meanwhile)."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


def _conf(rd: Ready) -> bool:
    """Whether ``rd`` commits a membership change (its WAL write is then synced)."""
    return any(e.kind == EntryKind.CONF for e in rd.committed)


def _already_applied(core: RaftCore, change: ConfChangeType, member_id: int) -> bool:
    if change == ConfChangeType.ADD_VOTER:
        return member_id in core.voters
    if change == ConfChangeType.ADD_LEARNER:
        return member_id in core.voters or member_id in core.learners
    return member_id not in core.voters and member_id not in core.learners
