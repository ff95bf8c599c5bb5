"""``EtcdStore``: the kernel's store with the log kept in an external etcd 3.x cluster.

For teams that already run etcd: the managers keep no log of their own, they are clients of
etcd (mutual TLS), which orders, replicates and persists the entries. Under ``prefix``:

- ``log``: one key; every entry is a new revision of it, and the entry's index is that etcd
  revision (increasing, with gaps where other keys changed). Every manager watches the prefix
  from revision 1, so ``start`` replays the whole log and then follows new entries in order.
- ``leader``: the leader's node ID and address, attached to its lease. A manager campaigns by
  creating the key only if it is absent (a transaction); it leads while its key lives. A leader
  that cannot keep its lease alive for ``lease-ttl`` seconds steps down (its key expires, so
  another manager takes over); a proposal is written only if the proposer's own leader key is
  still the one in etcd, so a deposed leader never appends.
- ``members/<node ID>``: the managers (address as value), written by the leader's
  ``add_member``/``remove_member``; ``alive/<node ID>``: each manager's presence, attached to
  its lease (``node ls`` reachability).
- ``cluster``: exists once ``swarm init`` created the swarm here.
- ``snapshot``: the state machine's snapshot, as ``<index>\\n<bytes>``. Every
  ``snapshot_interval`` entries (the swarm's ``--snapshot-interval``) the leader writes one
  and compacts etcd's history up to its index, so a long-running swarm does not grow etcd
  forever. A manager that starts (or whose watch finds the history compacted) restores the
  snapshot and follows the log from the entry after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import ClassVar

from shoal.plugin import (
    Handler,
    LeadershipFeed,
    MemberInfo,
    NotLeaderError,
    PluginContext,
    StateMachine,
    StoreOpenError,
    StoreUnavailable,
    StreamHandler,
)

from shoal_store_etcd import etcdapi_pb2 as pb
from shoal_store_etcd.client import EtcdClient, EtcdError, prefix_end
from shoal_store_etcd.options import NEEDS, EtcdOptions

log = logging.getLogger("shoal.store.etcd")

MEMBER_FILE = "member.json"
#: How often a follower retries a campaign without being told the leader key went away.
CAMPAIGN_EVERY = 0.5
#: Entries between snapshots until the swarm's setting arrives through ``tune`` (Swarm's default).
DEFAULT_SNAPSHOT_INTERVAL = 10000


class EtcdStore:
    """The ``etcd`` store provider (see the module docstring)."""

    role: ClassVar[str] = "store"
    api_version: ClassVar[int] = 3

    def __init__(self, state_dir: Path, options: EtcdOptions, *, node_id: str, addr: str) -> None:
        self.state_dir = Path(state_dir)
        self.options = options
        self.node_id = node_id or "local"
        self.addr = addr
        p = options.prefix.encode()
        self.k_cluster, self.k_log, self.k_leader = p + b"/cluster", p + b"/log", p + b"/leader"
        self.k_members, self.k_alive = p + b"/members/", p + b"/alive/"
        self.k_snapshot = p + b"/snapshot"
        self.snapshot_interval = DEFAULT_SNAPSHOT_INTERVAL
        #: The index of the last snapshot written or restored here (compaction is up to it).
        self._snapshot_index = 0
        self._snapshotting = False
        self._client: EtcdClient | None = None
        self._machine: StateMachine | None = None
        self._lease = 0
        self._applied = 0
        self._leader = False
        #: The create revision of our leader key while we lead (proposals are fenced on it).
        self._leader_rev = 0
        self._leader_info: tuple[str, str] | None = None
        self._members: dict[str, str] = {}
        self._alive: set[str] = set()
        self._was_member = False
        self._closed = False
        self._hold_campaign_until = 0.0
        self._futures: dict[int, list[asyncio.Future[int]]] = {}
        self._leadership = LeadershipFeed()
        self._tasks: list[asyncio.Task[None]] = []
        self._campaign_now = asyncio.Event()

    @classmethod
    def from_context(cls, context: PluginContext) -> EtcdStore:
        return cls(
            context.state_dir,
            EtcdOptions.parse(context.options),
            node_id=context.node_id,
            addr=context.advertise_addr,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        machine: StateMachine,
        *,
        bootstrap: bool,
        join: bool = False,
        force_new_cluster: bool = False,
    ) -> None:
        marker = self.state_dir / MEMBER_FILE
        if not (bootstrap or join) and not marker.exists():
            raise StoreOpenError(
                f"no etcd store state in {self.state_dir}: this manager was never initialised "
                "(bootstrap a new swarm with `swarm init`, or join an existing one)"
            )
        opts = self.options
        if opts.credentials is None or not opts.endpoints:
            raise StoreOpenError(NEEDS)
        client = self._client = EtcdClient(
            list(opts.endpoints), opts.credentials, timeout=opts.timeout_ms / 1000
        )
        self._machine = machine
        try:
            await self._open(bootstrap=bootstrap, join=join, force_new_cluster=force_new_cluster)
        except EtcdError as exc:
            await client.close()
            raise StoreOpenError(
                f"cannot open the swarm's state in etcd ({', '.join(opts.endpoints)}): {exc}"
            ) from None
        except BaseException:
            await client.close()
            raise
        self.state_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"prefix": opts.prefix, "node_id": self.node_id}))

    async def _open(self, *, bootstrap: bool, join: bool, force_new_cluster: bool) -> None:
        client = self._client
        assert client is not None
        if bootstrap:
            created = await client.txn(
                pb.TxnRequest(
                    compare=[
                        pb.Compare(
                            result=pb.Compare.EQUAL, target=pb.Compare.VERSION, key=self.k_cluster, version=0
                        )
                    ],
                    success=[
                        pb.RequestOp(
                            request_put=pb.PutRequest(key=self.k_cluster, value=self.node_id.encode())
                        ),
                        pb.RequestOp(
                            request_put=pb.PutRequest(
                                key=self.k_members + self.node_id.encode(), value=self.addr.encode()
                            )
                        ),
                    ],
                )
            )
            if not created.succeeded:
                raise StoreOpenError(
                    f"a swarm already keeps its state in etcd under {self.options.prefix}: give this swarm "
                    "another --plugin-opt store.prefix, or delete that swarm's keys"
                )
        else:
            found = await client.range(self.k_cluster)
            if not found.kvs:
                raise StoreOpenError(
                    f"no swarm keeps its state in etcd under {self.options.prefix} "
                    f"({', '.join(self.options.endpoints)}): check store.endpoints and store.prefix"
                )
        if force_new_cluster:
            await client.delete(self.k_members, prefix=True)
            await client.delete(self.k_leader)
            await client.put(self.k_members + self.node_id.encode(), self.addr.encode())
        self._lease = await client.grant(self.options.lease_ttl)
        await client.put(self.k_alive + self.node_id.encode(), self.addr.encode(), lease=self._lease)
        at, last_entry = await self._load()
        loop = asyncio.get_running_loop()
        caught_up = loop.create_future()
        self._tasks = [
            loop.create_task(self._watch(at, last_entry, caught_up), name="etcd-watch"),
            loop.create_task(self._keepalive(), name="etcd-keepalive"),
        ]
        # asyncio.timeout, not wait_for (here and below): on Python 3.11 wait_for returns when its
        # inner wait is done as a cancellation arrives, swallowing it. On timeout the future is
        # cancelled as before (a task's cancelled await cancels the future it awaits).
        async with asyncio.timeout(60):
            await caught_up
        if self.node_id in self._members:
            await self._campaign()  # a lone member leads before start returns
        self._tasks.append(loop.create_task(self._campaigner(), name="etcd-campaign"))
        log.info(
            "etcd store started: node %s, applied %d, leader %s", self.node_id, self._applied, self._leader
        )

    async def _load(self) -> tuple[int, int]:
        """Read every key of the swarm as of one revision: restore the snapshot if it is ahead
        of what was applied here, note membership and leader; return (that revision, the last
        entry's index). The watch then follows every change after it."""
        client = self._client
        assert client is not None
        current = await client.range(self.options.prefix.encode() + b"/", prefix=True)
        last_entry = 0
        self._members.clear()
        self._alive.clear()
        for kv in current.kvs:
            if kv.key == self.k_log:
                last_entry = kv.mod_revision
            elif kv.key == self.k_snapshot:
                self._restore(kv.value)
            else:
                self._note(pb.Event(type=pb.Event.PUT, kv=kv))
        return current.header.revision, last_entry

    def _restore(self, value: bytes) -> None:
        header, _, data = value.partition(b"\n")
        index = int(header)
        self._snapshot_index = max(self._snapshot_index, index)
        if index > self._applied:
            assert self._machine is not None
            self._machine.restore(index, data)
            self._applied = index
            log.info("etcd store restored the snapshot at index %d", index)

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._set_leader(False)
        self._fail_pending(StoreUnavailable("the store is stopped; the write may not have been committed"))
        self._leadership.close()
        client = self._client
        if client is not None:
            if self._lease:
                with contextlib.suppress(EtcdError):
                    await client.revoke(self._lease)  # our leader and alive keys go at once
            await client.close()

    def status(self) -> dict[str, object]:
        return {
            "backend": "etcd",
            "endpoints": list(self.options.endpoints),
            "prefix": self.options.prefix,
            "state": "stopped" if self._closed else "running",
            "applied_index": self._applied,
            "snapshot_index": self._snapshot_index,
            "leader": self._leader_info[0] if self._leader_info else "",
            "members": sorted(self._members),
        }

    # ------------------------------------------------------------------ the log

    async def propose(self, entry: bytes) -> int:
        client = self._client
        if client is None or self._closed:
            raise StoreUnavailable("the store is stopped; start the daemon's store before writing")
        if not self._leader:
            raise NotLeaderError("this node is not the leader; retry against the leader")
        try:
            reply = await self._put_while_leading(client, self.k_log, entry)
        except EtcdError as exc:
            # The kernel's "no leader" words: with etcd's quorum gone, no manager can lead.
            raise StoreUnavailable(
                f"The swarm does not have a leader: its etcd store did not confirm the write ({exc}). "
                "Make sure more than half of the etcd members are online; the write may or may not "
                "have been committed, check before retrying"
            ) from None
        if not reply.succeeded:
            self._set_leader(False)
            raise NotLeaderError("this node lost leadership before the write; retry against the leader")
        index = reply.header.revision
        if self._applied >= index:
            return index
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(index, []).append(fut)
        return await fut

    async def _put_while_leading(self, client: EtcdClient, key: bytes, value: bytes) -> pb.TxnResponse:
        """Write ``key`` only if our leader key is still the one in etcd (a deposed leader's
        write fails: ``succeeded`` is false)."""
        fence = pb.Compare(
            result=pb.Compare.EQUAL,
            target=pb.Compare.CREATE,
            key=self.k_leader,
            create_revision=self._leader_rev,
        )
        put = pb.RequestOp(request_put=pb.PutRequest(key=key, value=value))
        return await client.txn(pb.TxnRequest(compare=[fence], success=[put]))

    async def _watch(self, at: int, last_entry: int, caught_up: asyncio.Future[None]) -> None:
        """Apply every entry from the first, then follow every change under the prefix."""
        client = self._client
        assert client is not None
        start = self._applied + 1
        if last_entry <= self._applied and not caught_up.done():
            caught_up.set_result(None)
        while not self._closed:
            request = pb.WatchRequest(
                create_request=pb.WatchCreateRequest(
                    key=self.options.prefix.encode() + b"/",
                    range_end=prefix_end(self.options.prefix.encode() + b"/"),
                    start_revision=start,
                )
            )

            async def requests(req: pb.WatchRequest = request) -> AsyncIterator[pb.WatchRequest]:
                yield req
                await asyncio.Event().wait()  # keep the stream open

            try:
                async for reply in client.watch(requests()):
                    if reply.compact_revision:
                        # The entries we still need were compacted after a snapshot: restore
                        # the snapshot and follow on from it.
                        at, last_entry = await self._load()
                        if self._snapshot_index + 1 < reply.compact_revision:
                            error = StoreOpenError(
                                f"etcd compacted the swarm's log under {self.options.prefix} up to "
                                f"revision {reply.compact_revision}, past its last snapshot "
                                f"({self._snapshot_index}): restore etcd from a backup"
                            )
                            if not caught_up.done():
                                caught_up.set_exception(error)
                            return
                        start = self._applied + 1
                        break
                    for event in reply.events:
                        start = event.kv.mod_revision + 1
                        if event.kv.key == self.k_log:
                            if event.type == pb.Event.PUT and event.kv.mod_revision > self._applied:
                                self._apply(event.kv.mod_revision, event.kv.value)
                        elif event.kv.mod_revision > at:
                            self._note(event)
                    if not caught_up.done() and self._applied >= last_entry:
                        caught_up.set_result(None)
                else:
                    continue
                if not caught_up.done() and self._applied >= last_entry:
                    caught_up.set_result(None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the endpoint went away: resume on another from `start`
                log.debug("etcd watch ended (%s); resuming from revision %d", exc, start)
                client.rotate()
                await asyncio.sleep(0.1)

    def _apply(self, index: int, entry: bytes) -> None:
        assert self._machine is not None
        self._machine.apply(index, entry)
        self._applied = index
        if self._leader and not self._snapshotting and index - self._snapshot_index >= self.snapshot_interval:
            self._snapshotting = True
            snapshot = b"%d\n" % index + self._machine.snapshot()
            task = asyncio.get_running_loop().create_task(self._snapshot(index, snapshot))
            self._tasks = [t for t in self._tasks if not t.done()] + [task]
        for waiting in [i for i in self._futures if i <= index]:
            for fut in self._futures.pop(waiting):
                if not fut.done():
                    fut.set_result(waiting)

    def _note(self, event: pb.Event) -> None:
        """Follow a change of the leader, members or alive keys."""
        key, put = event.kv.key, event.type == pb.Event.PUT
        if key == self.k_leader:
            if put:
                node, _, addr = event.kv.value.decode().partition("\n")
                self._leader_info = (node, addr)
                if node != self.node_id or event.kv.create_revision != self._leader_rev:
                    self._set_leader(False)
            else:
                self._leader_info = None
                self._set_leader(False)
                self._campaign_now.set()
        elif key.startswith(self.k_members):
            node = key[len(self.k_members) :].decode()
            if put:
                self._members[node] = event.kv.value.decode()
                if node == self.node_id:
                    self._was_member = True
                    self._campaign_now.set()
            else:
                self._members.pop(node, None)
                if node == self.node_id and self._was_member:
                    self._on_removed()
        elif key.startswith(self.k_alive):
            node = key[len(self.k_alive) :].decode()
            (self._alive.add if put else self._alive.discard)(node)

    # ------------------------------------------------------------------ leadership

    async def _snapshot(self, index: int, snapshot: bytes) -> None:
        """Leader: write the snapshot taken at ``index`` (only while still leading, and only
        over an older one), then compact etcd's history up to it."""
        client = self._client
        assert client is not None
        try:
            reply = await self._put_while_leading(client, self.k_snapshot, snapshot)
            if reply.succeeded:
                self._snapshot_index = max(self._snapshot_index, index)
                await client.compact(index)
                log.info("etcd store: snapshot at index %d, history compacted up to it", index)
        except EtcdError as exc:
            log.warning("etcd store: snapshot at index %d not written (%s); retrying later", index, exc)
        finally:
            self._snapshotting = False

    async def _campaign(self) -> None:
        client = self._client
        loop = asyncio.get_running_loop()
        if (
            client is None
            or self._closed
            or self._leader
            or self._leadership.removed
            or self.node_id not in self._members
            or loop.time() < self._hold_campaign_until
        ):
            return
        value = f"{self.node_id}\n{self.addr}".encode()
        reply = await client.txn(
            pb.TxnRequest(
                compare=[
                    pb.Compare(
                        result=pb.Compare.EQUAL,
                        target=pb.Compare.CREATE,
                        key=self.k_leader,
                        create_revision=0,
                    )
                ],
                success=[
                    pb.RequestOp(request_put=pb.PutRequest(key=self.k_leader, value=value, lease=self._lease))
                ],
            )
        )
        if reply.succeeded:
            self._leader_rev = reply.header.revision
            self._leader_info = (self.node_id, self.addr)
            self._set_leader(True)

    async def _campaigner(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CAMPAIGN_EVERY):
                    await self._campaign_now.wait()
            self._campaign_now.clear()
            try:
                await self._campaign()
            except EtcdError as exc:
                log.debug("campaign failed: %s", exc)

    async def _keepalive(self) -> None:
        """Keep the lease alive; a leader that cannot for ``lease-ttl`` seconds steps down, and
        an expired lease is replaced (new alive key, campaign again)."""
        client = self._client
        assert client is not None
        ttl = self.options.lease_ttl
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while not self._closed:
            try:
                # A swallowed cancellation (wait_for) went on to sleep ttl/3 and held stop() up.
                async with asyncio.timeout(ttl / 3):
                    reply = await self._renew(client)
                if reply.TTL <= 0:
                    raise EtcdError("lease expired")
                last_ok = loop.time()
            except (EtcdError, TimeoutError, Exception) as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                if loop.time() - last_ok >= ttl * 0.8 or (
                    isinstance(exc, EtcdError) and "expired" in str(exc)
                ):
                    self._set_leader(False)
                    if self._leader_info is not None and self._leader_info[0] == self.node_id:
                        self._leader_info = None  # not us any more, and who else is unknown
                    try:
                        self._lease = await client.grant(ttl)
                        await client.put(
                            self.k_alive + self.node_id.encode(), self.addr.encode(), lease=self._lease
                        )
                        last_ok = loop.time()
                        self._campaign_now.set()
                    except EtcdError:
                        client.rotate()
                continue
            await asyncio.sleep(ttl / 3)

    async def _renew(self, client: EtcdClient) -> pb.LeaseKeepAliveResponse:
        async def one() -> AsyncIterator[pb.LeaseKeepAliveRequest]:
            yield pb.LeaseKeepAliveRequest(ID=self._lease)

        call = client.keepalive(one())
        try:
            async for reply in call:
                return reply  # type: ignore[no-any-return]
        except Exception as exc:
            client.rotate()
            raise EtcdError(f"lease keep-alive failed: {exc}") from None
        raise EtcdError("lease keep-alive: no answer")

    def is_leader(self) -> bool:
        return self._leader and not self._closed

    def leadership(self) -> AsyncIterator[bool]:
        return self._leadership.subscribe(lambda: self._leader)

    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        if not leader:
            self._leader_rev = 0
        self._leadership.changed(leader)

    def _on_removed(self) -> None:
        self._set_leader(False)
        self._leadership.member_removed(
            "this manager is no longer a member of the swarm's managers (removed from the etcd store)"
        )

    def leader(self) -> MemberInfo | None:
        if self._closed or self._leader_info is None:
            return None
        node, addr = self._leader_info
        return MemberInfo(node, addr, voter=True, leader=True, reachable=True)

    async def transfer_leadership(self, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        client = self._client
        if client is None or not self._leader:
            raise StoreUnavailable("this member is not the leader; leadership changes go to the leader")
        others = [n for n in self._members if n != self.node_id and n in self._alive]
        if not others:
            raise StoreUnavailable("there is no other manager to hand leadership to")
        loop = asyncio.get_running_loop()
        self._hold_campaign_until = loop.time() + timeout
        self._set_leader(False)
        await client.delete(self.k_leader)
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            info = self._leader_info
            if info is not None and info[0] != self.node_id:
                return info[0]
            await asyncio.sleep(0.05)
        raise StoreUnavailable(f"leadership was not transferred within {timeout:g} s; retry")

    # ------------------------------------------------------------------ membership

    def members(self) -> list[MemberInfo]:
        lead = self._leader_info[0] if self._leader_info else ""
        return [
            MemberInfo(node, addr, voter=True, leader=node == lead, reachable=node in self._alive)
            for node, addr in sorted(self._members.items())
        ]

    async def add_member(self, node_id: str, addr: str) -> None:
        client = self._require_leader()
        try:
            await client.put(self.k_members + node_id.encode(), addr.encode())
        except EtcdError as exc:
            raise StoreUnavailable(f"could not add the manager: {exc}") from None

    async def remove_member(self, node_id: str) -> None:
        client = self._require_leader()
        if node_id not in self._members:
            return
        try:
            await client.delete(self.k_members + node_id.encode())
        except EtcdError as exc:
            raise StoreUnavailable(f"could not remove the manager: {exc}") from None

    def _require_leader(self) -> EtcdClient:
        if self._client is None or self._closed or not self._leader:
            raise StoreUnavailable("this member is not the leader; membership changes go to the leader")
        return self._client

    # ------------------------------------------------------------------ the rest of the contract

    def rpc_handlers(self) -> tuple[Mapping[str, Handler], Mapping[str, StreamHandler]]:
        return {}, {}  # the managers never call each other: etcd is between them

    def tune(self, settings: Mapping[str, int]) -> None:
        """Raft timing does not apply (leadership follows the lease, ``store.lease-ttl``); the
        snapshot interval does: entries between snapshots and compactions of etcd's history."""
        interval = settings.get("snapshot_interval")
        if interval is not None:
            if interval < 1:
                raise ValueError(f"the snapshot interval must be at least 1 entry, got {interval}")
            self.snapshot_interval = interval

    def _fail_pending(self, exc: StoreUnavailable) -> None:
        for futures in self._futures.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)
        self._futures.clear()
