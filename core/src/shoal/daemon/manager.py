"""The manager half of a node: the store replica and, while leader, the control loops.

Every manager holds the object store (fed by the store provider, which replicates it between
managers its own way). The one that leads also runs the dispatcher, the replicated
orchestrator, the scheduler driver and the task reaper; they start when the store provider
reports leadership and stop when it is lost. Any manager serves the control API: a follower
forwards each call to the leader, and with no leader it answers reads from its own copy with
a warning that they may be stale and refuses writes with Swarm's quorum message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

from shoal import externalca, rpc, statekeys, yieldingjson
from shoal.daemon.leaderwait import LeaderWait
from shoal.daemon.localapi import Warned
from shoal.gcpolicy import CollectorPolicy
from shoal.loader import PluginError
from shoal.looplag import LoopLagProbe, LoopLagReporter
from shoal.manager import autolock, controlrelay, registryauth
from shoal.manager import requests as rq
from shoal.manager.caserver import CAServer
from shoal.manager.controlapi import ControlAPI, ControlError, control_params
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.events import EventLog, events_stream
from shoal.manager.methods import READ_METHODS, Owner
from shoal.manager.netcontrol import NetworkControl
from shoal.manager.observers import TaskStateObservers
from shoal.manager.orchestrator import ReplicatedOrchestrator
from shoal.manager.reaper import TaskReaper
from shoal.manager.rowwarm import RowWarmer
from shoal.manager.scheduler_driver import SchedulerDriver
from shoal.manager.secrets import SecretsControl, SecretsFactory
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.ca import CAProvider, ExternalCA, RootMaterial
from shoal.roles.scheduler import SchedulerProvider
from shoal.roles.secrets import SecretsProvider
from shoal.roles.store import MemberRemoved, NotLeaderError, StoreProvider, StoreUnavailable
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode, TLSMaterial, TransportProvider
from shoal.store.memory import ObjectStore, Tx, copy

log = logging.getLogger("shoal.manager")


def _no_secrets(driver: str) -> SecretsProvider:
    raise PluginError(f"no secrets plugin was given to this manager (driver {driver})")


NO_LEADER = (
    "The swarm does not have a leader. It's possible that too few managers are online. "
    "Make sure more than half of the managers are online."
)
STALE_WARNING = (
    "the swarm has no leader right now: this manager answered from its own copy of the state, "
    "which may be out of date"
)
NOT_LEADER = "this manager is not the leader"
#: How long a call waits for a leader (an election in progress) before failing: longer than
#: an election (at most two election timeouts of the default store), short enough that a
#: swarm that lost its quorum answers within a few seconds.
LEADER_WAIT = 2.5


class Manager:
    """Owns the store replica and the leader-only components."""

    def __init__(
        self,
        *,
        node_id: str,
        cluster_id: str,
        advertise_addr: str,
        store_provider: StoreProvider,
        ca: CAProvider,
        scheduler_factory: Callable[[], SchedulerProvider],
        transport: TransportProvider,
        tls: Callable[[], TLSMaterial],
        state_dir: Path,
        node_filters: Callable[[], list[Any]] = list,
        task_state_changed: Callable[..., Any] | None = None,
        on_plugin_failure: Callable[[PluginError], None] | None = None,
        secrets: SecretsFactory | None = None,
        keyring: statekeys.ManagerKeyring | None = None,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.advertise_addr = advertise_addr
        #: ``manager_addrs`` as last computed, with the (leader, applied index) it holds for.
        self._manager_addrs: tuple[tuple[str, int], list[str]] | None = None
        self.store_provider = store_provider
        self.ca = ca
        self.scheduler_factory = scheduler_factory
        self.node_filters = node_filters
        self.task_state_changed = task_state_changed
        #: Told when a plugin fails after start (a scheduler built on becoming leader): the
        #: daemon stops with the error's line rather than lead without scheduling.
        self.on_plugin_failure = on_plugin_failure
        self.transport = transport
        self.tls = tls
        self.state_dir = state_dir
        self.store = ObjectStore()
        self.store.provider = store_provider
        self.control = ControlAPI(self.store, node_id, manager_status=self.live_manager_status)
        #: ``shoal events``: this replica's ring of recent events (every manager has one).
        self.events = EventLog(self.store)
        #: How long the event loop was held (Raft ticks and heartbeats wait behind it): logged
        #: at debug every 10 s, as a warning when one stretch reached half a second.
        self.loop_lag = LoopLagReporter(LoopLagProbe())
        #: Long-lived objects (the store) out of the garbage collector's full passes.
        self.collector = CollectorPolicy()
        #: Set when the other managers say this one is no longer a member: every call fails
        #: with this message until the node leaves and joins again.
        self.removed: str = ""
        #: Secrets and configs: the control methods and, on the leader, the dispatcher's values.
        self.secrets = SecretsControl(self.store, secrets or _no_secrets, self._secrets_driver)
        #: The control methods served here besides ``ControlAPI``'s (``methods.py``).
        self.control.owners = {
            Owner.MANAGER: self,
            Owner.SECRETS: self.secrets,
            Owner.NETWORKS: NetworkControl(self.store),
        }
        #: This manager's keys at rest, re-wrapped when the cluster's unlock key changes.
        self.keyring = keyring
        self._key_follow: asyncio.Task[None] | None = None
        self.control.check_external_cas = self._check_external_cas
        self.control.seal_registry_auth = partial(registryauth.seal, self.secrets)
        self.ca_server = CAServer(self.store, ca, cluster_id)
        self.dispatcher: Dispatcher | None = None
        #: Where session opens reaching this manager while it does not lead wait for an election.
        self.leader_wait = LeaderWait(self.leader_addr)
        self._components: list[Any] = []
        self._leadership: asyncio.Task[None] | None = None
        self._leader_watch: asyncio.Task[None] | None = None
        self._raft_timing: asyncio.Task[None] | None = None
        #: When this replica last knew of a leader (monotonic clock).
        self._leader_seen_at = time.monotonic()
        self._ca_config: asyncio.Task[None] | None = None
        self._transition = asyncio.Lock()

    async def start(
        self,
        *,
        bootstrap: bool = False,
        join: bool = False,
        force_new_cluster: bool = False,
        init: Callable[[Tx], None] | None = None,
    ) -> None:
        """Open the store replica. A joining manager's store is empty until ``join_group``;
        everything else is ready when this returns."""
        self.events.start()  # before the store replays its log: replayed entries count
        self.loop_lag.start()
        await self.store_provider.start(
            self.store, bootstrap=bootstrap, join=join, force_new_cluster=force_new_cluster
        )
        self.collector.start()  # after the replay: the loaded store is frozen at once
        self._leader_watch = asyncio.create_task(self._watch_leader(), name="leader-watch")
        if self.keyring is not None:
            self._key_follow = asyncio.create_task(
                autolock.follow_cluster(self.store, self.keyring), name="autolock-follow"
            )
        if join:
            self._leadership = asyncio.create_task(self._follow_leadership(), name="leadership")
            return
        if init is not None:
            await self.store.update(init)
        self._leadership = asyncio.create_task(self._follow_leadership(), name="leadership")
        if force_new_cluster:
            await self._forget_other_managers()
        await self._configure_ca()

    async def _configure_ca(self) -> None:
        cluster = self.store.view.cluster()
        if cluster is None:
            raise RuntimeError("the store holds no cluster object: the manager state is damaged")
        await self.ca.configure(externalca.from_spec(cluster))
        await self.ca.load_root(
            RootMaterial(cert_pem=cluster.root_ca.ca_cert, key_pem=cluster.root_ca.ca_key)
        )
        self._ca_config = asyncio.create_task(self._follow_external_cas(), name="external-cas")
        self._raft_timing = asyncio.create_task(self._follow_raft_timing(), name="raft-timing")

    async def join_group(self, remote: str, others: list[str] | None = None, timeout: float = 180.0) -> None:  # noqa: ASYNC109
        """Ask the leader (through ``remote``, any manager, or ``others`` if it fails) to add
        this store member, then wait until the replica holds the cluster."""
        request = rpb.StoreJoinRequest(node_id=self.node_id, addr=self.advertise_addr).SerializeToString()
        deadline = time.monotonic() + timeout
        targets = [remote]
        while True:
            target = targets[-1]
            try:
                await self.transport.call(
                    target,
                    rpc.STORE_JOIN,
                    request,
                    tls=self.tls(),
                    timeout=max(1.0, deadline - time.monotonic()),
                )
                break
            except RPCError as exc:
                # The join is idempotent on the leader, so a dropped connection or an election
                # in progress is retried (through the leader, once this replica knows it).
                if exc.code not in (StatusCode.UNAVAILABLE, StatusCode.INTERNAL, StatusCode.UNKNOWN):
                    raise
                if time.monotonic() > deadline:
                    raise
                log.info("joining the managers through %s failed (%s); retrying", target, exc.message)
                await asyncio.sleep(0.5)
                leader = self.leader_addr()
                candidates = [remote, *(others or [])]
                fallback = candidates[len(targets) % len(candidates)]
                targets.append(leader if leader and leader != self.advertise_addr else fallback)
        deadline = time.monotonic() + 60
        while self.store.view.cluster() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("this manager was added but has not received the swarm's state in 60 s")
            await asyncio.sleep(0.05)
        await self._configure_ca()

    async def _forget_other_managers(self) -> None:
        """After ``--force-new-cluster``: this manager is the only one. The others' node objects
        stay (as down workers with a note) so operators see what happened; they go on the
        removed-node list in the same transaction, so their certificates are refused by every
        RPC (their store traffic is told to leave and join again)."""

        def forget(tx: Tx) -> None:
            forgotten = []
            for node in list(tx.view.nodes.all()):
                if node.id == self.node_id or node.role != pb.NodeSpec.MANAGER:
                    continue
                forgotten.append(node.id)
                node = copy(node)
                node.role = pb.NodeSpec.WORKER
                node.spec.desired_role = pb.NodeSpec.WORKER
                node.manager_status.Clear()
                node.status.state = pb.NodeStatus.DOWN
                node.status.message = "removed by swarm init --force-new-cluster: leave and join again"
                tx.update(node)
            rpc.record_removed(tx, forgotten, "force-new-cluster")
            me = tx.node(self.node_id)
            if me is not None:
                me = copy(me)
                me.manager_status.addr = self.advertise_addr
                tx.update(me)

        await self._wait_for_leadership(10.0)
        await self.store.update(forget)

    async def _wait_for_leadership(self, timeout: float) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not self.store_provider.is_leader():
            if time.monotonic() > deadline:
                raise StoreUnavailable("this manager did not become the leader of its new one-member swarm")
            await asyncio.sleep(0.02)

    def _removed_from_group(self, message: str) -> None:
        if self.removed:
            return
        self.removed = rpc.REMOVED_MESSAGE
        log.error("%s (%s)", rpc.REMOVED_MESSAGE, message)
        asyncio.get_running_loop().create_task(self._shut_store(), name="removed-from-group")

    async def _shut_store(self) -> None:
        async with self._transition:
            await self._step_down()
        await self.store_provider.stop()

    def _tune_store(self, cluster: pb.Cluster) -> None:
        raft = cluster.spec.raft
        settings: dict[str, int] = {}
        if raft.tick_ms and raft.election_tick and raft.heartbeat_tick:
            settings.update(
                tick_ms=raft.tick_ms, election_ticks=raft.election_tick, heartbeat_ticks=raft.heartbeat_tick
            )
        if raft.snapshot_interval:  # swarm init/update --snapshot-interval
            settings["snapshot_interval"] = raft.snapshot_interval
        if not settings:
            return
        try:
            self.store_provider.tune(settings)
        except ValueError as exc:
            log.error("the store provider refused the swarm's raft timing: %s", exc)

    async def _follow_raft_timing(self) -> None:
        """``swarm update --raft-tick/--election-tick/--heartbeat-tick/--snapshot-interval``
        reaches every manager."""

        def timing(c: pb.Cluster) -> tuple[int, int, int, int]:
            raft = c.spec.raft
            return raft.tick_ms, raft.election_tick, raft.heartbeat_tick, raft.snapshot_interval

        cluster = self.store.view.cluster()
        current = timing(cluster) if cluster is not None else None
        if cluster is not None:
            self._tune_store(cluster)
        with self.store.watch(["cluster"]) as watch:
            while True:
                event = await watch.get()
                if timing(event.obj) != current:
                    current = timing(event.obj)
                    self._tune_store(event.obj)

    async def _follow_external_cas(self) -> None:
        """``swarm update --external-ca`` reaches the CA provider on every manager."""
        cluster = self.store.view.cluster()
        current = list(cluster.spec.ca_config.external_cas) if cluster is not None else []
        with self.store.watch(["cluster"]) as watch:
            while True:
                event = await watch.get()
                wanted = list(event.obj.spec.ca_config.external_cas)
                if wanted != current:
                    current = wanted
                    try:
                        await self.ca.configure(externalca.from_spec(event.obj))
                    except ValueError as exc:
                        log.error("the CA provider refused the external CA list: %s", exc)

    async def _watch_leader(self) -> None:
        while True:
            if self.store_provider.leader() is not None:
                self._leader_seen_at = time.monotonic()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for task in (
            self._leadership,
            self._ca_config,
            self._leader_watch,
            self._raft_timing,
            self._key_follow,
        ):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._step_down()
        await self.leader_wait.close()
        await self.store_provider.stop()
        await self.events.stop()
        await self.loop_lag.stop()
        await self.collector.stop()

    def is_leader(self) -> bool:
        return self.store_provider.is_leader()

    # ------------------------------------------------------------------ leadership

    async def _follow_leadership(self) -> None:
        try:
            async for leader in self.store_provider.leadership():
                async with self._transition:
                    if leader:
                        try:
                            await self._become_leader()
                        except PluginError as exc:
                            self._plugin_failed(exc)
                            return
                    else:
                        await self._step_down()
        except MemberRemoved as exc:
            self._removed_from_group(str(exc))

    async def _become_leader(self) -> None:
        if self._components:
            return
        # Built first: a scheduler plugin that fails leaves nothing half started.
        scheduler_provider = self.scheduler_factory()
        log.info("this node is now the leader")
        self.dispatcher = Dispatcher(
            self.store, self.cluster_id, self.manager_addrs, secret_value=self.secrets.value_for
        )
        scheduler = SchedulerDriver(self.store, scheduler_provider, self.node_filters())
        self._components = [
            self.dispatcher,
            ReplicatedOrchestrator(self.store),
            scheduler,
            TaskReaper(self.store),
            RowWarmer(self.store, self.control.ps_rows),  # service ps's rows, built when quiet
        ]
        if self.task_state_changed is not None:
            self._components.append(TaskStateObservers(self.store, self.task_state_changed))
        for component in self._components:
            component.start()
        await self._mark_self_leader()

    def _plugin_failed(self, error: PluginError) -> None:
        """A leader-only provider could not be built: a leader that cannot schedule must not
        stay leader quietly. The daemon stops (and another manager can lead)."""
        if self.on_plugin_failure is not None:
            self.on_plugin_failure(error)
        else:
            log.error("%s", error)

    def _secrets_driver(self) -> str:
        """The cluster's secrets plugin: the default ``--driver`` of ``secret create``."""
        cluster = self.store.view.cluster()
        return cluster.plugins.secrets if cluster is not None and cluster.plugins.secrets else "internal"

    def _check_external_cas(self, cas: list[ExternalCA]) -> None:
        cluster = self.store.view.cluster()
        name = cluster.plugins.ca if cluster is not None and cluster.plugins.ca else type(self.ca).__name__
        externalca.check_served(cas, type(self.ca), name)

    async def _step_down(self) -> None:
        components, self._components = self._components, []
        self.dispatcher = None
        for component in reversed(components):
            with contextlib.suppress(Exception):
                await component.stop()

    async def _mark_self_leader(self) -> None:
        """Record who leads (``node inspect`` shows it); ``node ls`` uses the live view."""

        def mark(tx: Tx) -> None:
            for node in list(tx.view.nodes.all()):
                is_self = node.id == self.node_id
                if node.manager_status.leader == is_self and not is_self:
                    continue
                node = copy(node)
                node.manager_status.leader = is_self
                if is_self:
                    node.manager_status.reachability = pb.ManagerStatus.REACHABLE
                    node.manager_status.addr = self.advertise_addr
                tx.update(node)

        try:
            await self.store.update(mark)
        except StoreUnavailable as exc:
            log.warning("could not record leadership: %s", exc)

    # ------------------------------------------------------------------ membership views

    def manager_addrs(self) -> list[str]:
        """Every manager's address, the leader's first (sent to agents in their session).

        Kept until the store applies another entry or the leader changes: every session
        message carries the list, and scanning every node for each of them made opening a
        thousand sessions quadratic (11% of a follower's CPU with 1,000 hollow nodes)."""
        key = (self.leader_addr(), self.store.applied_index)
        cached = self._manager_addrs
        if cached is not None and cached[0] == key:
            return list(cached[1])
        leader = key[0]
        addrs = [leader] if leader else []
        for node in self.store.view.nodes.all():
            addr = node.manager_status.addr
            if node.role == pb.NodeSpec.MANAGER and addr and addr not in addrs:
                addrs.append(addr)
        addrs = addrs or [self.advertise_addr]
        self._manager_addrs = (key, addrs)
        return list(addrs)

    def leader_addr(self) -> str:
        lead = self.store_provider.leader()
        return lead.addr if lead is not None else ""

    def live_manager_status(self, node: pb.Node) -> str:
        """MANAGER STATUS as ``node ls`` shows it, from the store's live membership view."""
        member = next((m for m in self.store_provider.members() if m.node_id == node.id), None)
        if member is None:
            return "Unreachable" if node.role == pb.NodeSpec.MANAGER else ""
        if member.leader:
            return "Leader"
        if not member.voter:
            return "Unknown"  # still catching up before it gets a vote
        return "Reachable" if member.reachable else "Unreachable"

    # ------------------------------------------------------------------ the control API

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """Serve a control call from the local CLI on any manager (see the module docstring)."""
        if self.removed:
            raise ControlError(StatusCode.FAILED_PRECONDITION, self.removed)
        handler = self.control.handlers().get(method)
        if handler is None:  # the local socket serves only registered methods; be sure
            raise ControlError(StatusCode.UNIMPLEMENTED, f"unknown method {method}")
        now = time.monotonic()
        # No leader for longer than an election takes: the quorum is gone, answer at once.
        deadline = now if now - self._leader_seen_at > LEADER_WAIT else now + LEADER_WAIT
        while True:
            if self.store_provider.is_leader():
                try:
                    return await handler(params)
                except NotLeaderError:
                    pass  # stepped down before the write was appended: nothing done, go on
            leader = self.leader_addr()
            if leader:
                try:
                    return await self._forward(leader, method, params)
                except RPCError as exc:
                    # Only failures that prove nothing was done are retried: the leader could
                    # not be reached, or it had already stepped down.
                    if exc.code != StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        if exc.code == StatusCode.UNAVAILABLE:
                            break
                        raise ControlError(exc.code, exc.message) from None
            elif method in READ_METHODS:
                break  # no leader known: a read need not wait for one
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if method in READ_METHODS:  # answered from this replica, which may be behind
            return Warned(await handler(params), STALE_WARNING)
        raise ControlError(StatusCode.UNAVAILABLE, NO_LEADER)

    async def _forward(self, leader: str, method: str, params: dict[str, Any]) -> Any:
        params = dict(params)
        # "self" means the node the CLI runs on, not the leader that serves the call.
        # (An empty reference is not "self": the leader refuses it, as it would locally.)
        if params.get("node") == "self":
            params["node"] = self.node_id
        if isinstance(params.get("nodes"), list):
            params["nodes"] = [self.node_id if n == "self" else n for n in params["nodes"]]
        request = rpb.ControlRequest(method=method, json_body=json.dumps(params).encode())
        if method == "service.ps" and params.get("pieces") is True:  # each piece on as it comes
            relayed = await controlrelay.relay(
                self.transport, leader, request.SerializeToString(), tls=self.tls(), timeout=120
            )
            if relayed is not None:  # (None: a leader without CONTROL_STREAM; asked as before)
                return relayed
        raw = await self.transport.call(
            leader, rpc.CONTROL, request.SerializeToString(), tls=self.tls(), timeout=120
        )
        body = rpb.ControlResponse.FromString(raw).json_body or b"null"
        if method == "service.ps" and params.get("pieces") is True:  # passed on as written
            return yieldingjson.Encoded(body.decode())  # (yieldingjson.Encoded: issue 18 item 2)
        result = json.loads(body)
        if method == "node.ls" and isinstance(result, list):
            for row in result:
                row["Self"] = row.get("ID") == self.node_id
        return result

    # ------------------------------------------------------------------ promotion and demotion

    async def swarm_unlock_key(self, request: rq.UnlockKey) -> Any:
        """``swarm unlock-key [--rotate]`` (``autolock.unlock_key``)."""
        return await autolock.unlock_key(self.store, rotate=request.rotate)

    async def node_promote(self, request: rq.NodeRefs) -> Any:
        """``node promote``: ask for a manager. The node's agent sees the new desired role,
        gets a manager certificate and joins the store as a new member (``Daemon``)."""
        result = []
        for ref in request.refs:
            node = self.control.find_node(ref)
            if node.role == pb.NodeSpec.MANAGER:
                result.append(f"Node {ref} is already a manager.")
                continue

            def promote(tx: Tx, node_id: str = node.id) -> None:
                current = tx.node(node_id)
                if current is None:
                    raise ControlError(StatusCode.NOT_FOUND, f"node {node_id} not found")
                current = copy(current)
                current.spec.desired_role = pb.NodeSpec.MANAGER
                tx.update(current)

            await self.store.update(promote)
            result.append(f"Node {ref} promoted to a manager in the swarm.")
        return result

    async def node_demote(self, request: rq.NodeRefs) -> Any:
        """``node demote``: leave the store's membership first (refused if that would lose
        quorum or the last manager), then become a worker (its agent renews its certificate
        as a worker and stops its manager). The leader hands leadership over first."""
        result = []
        for ref in request.refs:
            node = self.control.find_node(ref)
            if node.role == pb.NodeSpec.WORKER:
                result.append(f"Node {ref} is already a worker.")
                continue
            managers = [n for n in self.store.view.nodes.all() if n.role == pb.NodeSpec.MANAGER]
            if len(managers) <= 1:
                raise ControlError(
                    StatusCode.FAILED_PRECONDITION, "attempting to demote the last manager of the swarm"
                )
            if node.id == self.node_id:
                result.extend(await self._demote_self_via_new_leader(node.id))
                continue
            if any(m.node_id == node.id for m in self.store_provider.members()):
                self._check_removal_keeps_quorum(node.id)
                try:
                    await self.store_provider.remove_member(node.id)
                except StoreUnavailable as exc:
                    raise ControlError(
                        StatusCode.UNAVAILABLE, f"can't remove member from the raft: {exc}"
                    ) from None

            def demote(tx: Tx, node_id: str = node.id) -> None:
                current = tx.node(node_id)
                if current is None:
                    return
                current = copy(current)
                current.role = pb.NodeSpec.WORKER
                current.spec.desired_role = pb.NodeSpec.WORKER
                current.manager_status.Clear()
                tx.update(current)

            await self.store.update(demote)
            result.append(f"Manager {ref} demoted in the swarm.")
        return result

    def _check_removal_keeps_quorum(self, node_id: str) -> None:
        """Swarm's CanRemoveMember: after the removal, the reachable voters (this one counted)
        must still be a majority of the voters that remain."""
        voters = [m for m in self.store_provider.members() if m.voter and m.node_id != node_id]
        reachable = sum(1 for m in voters if m.reachable)
        if reachable < len(voters) // 2 + 1:
            raise ControlError(
                StatusCode.FAILED_PRECONDITION,
                "can't remove member from the raft: this would result in a loss of quorum",
            )

    async def _demote_self_via_new_leader(self, node_id: str) -> list[str]:
        try:
            await self.store_provider.transfer_leadership()
        except StoreUnavailable as exc:
            raise ControlError(StatusCode.UNAVAILABLE, f"cannot demote the leader: {exc}") from None
        deadline = time.monotonic() + LEADER_WAIT
        while not self.leader_addr() or self.store_provider.is_leader():
            if time.monotonic() > deadline:
                raise ControlError(StatusCode.UNAVAILABLE, NO_LEADER)
            await asyncio.sleep(0.05)
        try:
            result = await self._forward(self.leader_addr(), "node.demote", {"nodes": [node_id]})
        except RPCError as exc:
            raise ControlError(exc.code, exc.message) from None
        return list(result)

    # ------------------------------------------------------------------ RPC handlers

    def _leader_dispatcher(self) -> Dispatcher:
        if self.dispatcher is None:
            raise RPCError(StatusCode.UNAVAILABLE, "this manager is not the leader")
        return self.dispatcher

    def rpc_handlers(self) -> tuple[rpc.UnaryTable, rpc.StreamTable]:
        """Transport handlers: dispatcher calls go to the leader's dispatcher; CA calls to the
        CA server (issuing needs the leader, which writes the node object). Every method is
        served behind ``rpc.guard``: its access rule is checked against this replica's store
        before the handler runs (and before each message of a stream)."""

        async def heartbeat(request: bytes, peer: PeerIdentity | None) -> bytes:
            return await self._leader_dispatcher().heartbeat(request, peer)

        async def update_task_status(request: bytes, peer: PeerIdentity | None) -> bytes:
            return await self._leader_dispatcher().update_task_status(request, peer)

        async def issue(request: bytes, peer: PeerIdentity | None) -> bytes:
            if self.dispatcher is None and peer is None:
                # A node joining through a follower: the join needs only its token, so the
                # request goes to the leader as it came (anonymously).
                leader = self.leader_addr()
                if not leader:
                    raise RPCError(StatusCode.UNAVAILABLE, NO_LEADER)
                root = self.tls().root_pem
                return await self.transport.call(
                    leader, rpc.ISSUE_NODE_CERTIFICATE, request, tls=TLSMaterial(root_pem=root), timeout=30
                )
            self._leader_dispatcher()  # raises UNAVAILABLE on a follower
            return await self.ca_server.issue(request, peer)

        async def session(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
            if self.dispatcher is None and not self.is_leader():
                # During an election, wait for its result rather than send the agent back to
                # the leader it lost (leaderwait.py); this manager may be the one elected. (A
                # leader whose dispatcher is starting answers at once: it is alive, whatever the
                # agent lost.)
                lost = rpb.SessionRequest.FromString(request).lost_leader
                await self.leader_wait.leader_other_than(lost)
            if self.dispatcher is None:
                # Not the leader: tell the agent where the managers are, leader first, so a
                # node that joined through a follower finds the leader.
                if self.leader_addr():
                    yield rpb.SessionMessage(managers=self.manager_addrs()).SerializeToString()
            async for message in self._leader_dispatcher().session(request, peer):
                yield message

        async def assignments(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
            async for message in self._leader_dispatcher().assignments(request, peer):
                yield message

        async def control(request: bytes, peer: PeerIdentity | None) -> bytes:
            """The control API for other managers (forwarding): current managers only."""
            result = await answer(request)
            body = await yieldingjson.dumps(result)  # 100,000 tasks: in pieces, the loop runs between
            return rpb.ControlResponse(json_body=body.encode()).SerializeToString()

        async def control_stream(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
            """``control``'s answer's JSON in the parts it is written in (``controlrelay``)."""
            async for part in controlrelay.parts(await answer(request)):
                yield part

        async def answer(request: bytes) -> Any:
            """A forwarded control call's result, refusals as ``RPCError``."""
            call = rpb.ControlRequest.FromString(request)
            handler = self.control.handlers().get(call.method)
            if handler is None:
                raise RPCError(StatusCode.UNIMPLEMENTED, f"unknown control method {call.method}")
            if not self.store_provider.is_leader():
                raise RPCError(StatusCode.UNAVAILABLE, NOT_LEADER)  # nothing done: safe to retry
            try:
                result = await handler(control_params(call.json_body))
            except ControlError as exc:
                raise RPCError(exc.code, exc.message) from None
            except NotLeaderError:
                raise RPCError(StatusCode.UNAVAILABLE, NOT_LEADER) from None  # nothing written
            except StoreUnavailable as exc:
                # Not UNAVAILABLE: the write may have been committed, so it must not be retried.
                raise RPCError(StatusCode.INTERNAL, str(exc)) from None
            return result

        async def store_join(request: bytes, peer: PeerIdentity | None) -> bytes:
            return await self._store_join(rpb.StoreJoinRequest.FromString(request))

        unary_handlers: rpc.UnaryTable = {
            rpc.CONTROL: control,
            rpc.STORE_JOIN: store_join,
            rpc.HEARTBEAT: heartbeat,
            rpc.UPDATE_TASK_STATUS: update_task_status,
            rpc.GET_ROOT_CA: self.ca_server.get_root,
            rpc.ISSUE_NODE_CERTIFICATE: issue,
        }
        stream_handlers: rpc.StreamTable = {
            rpc.SESSION: session,
            rpc.ASSIGNMENTS: assignments,
            rpc.EVENTS: events_stream(lambda: self.events),
            rpc.CONTROL_STREAM: control_stream,
        }
        # The store's own replication methods (names under STORE_PEER_METHOD_PREFIX: rpc.guard
        # serves them to the other managers only).
        store_unary, store_streams = self.store_provider.rpc_handlers()
        unary_handlers.update(store_unary)
        stream_handlers.update(store_streams)
        check = rpc.checker(self.cluster_id, lambda: self.store.view)
        return rpc.guard(unary_handlers, stream_handlers, check)

    async def _store_join(self, req: rpb.StoreJoinRequest) -> bytes:
        """Add a manager's store member (on the leader; a follower passes the call on)."""
        if not self.store_provider.is_leader():
            leader = self.leader_addr()
            if not leader:
                raise RPCError(StatusCode.UNAVAILABLE, NO_LEADER)
            return await self.transport.call(
                leader, rpc.STORE_JOIN, req.SerializeToString(), tls=self.tls(), timeout=180
            )
        node = self.store.view.nodes.get(req.node_id)
        if node is None or node.role != pb.NodeSpec.MANAGER:
            raise RPCError(StatusCode.PERMISSION_DENIED, f"node {req.node_id} is not a manager of this swarm")
        if not req.addr:
            raise RPCError(StatusCode.INVALID_ARGUMENT, "a store join needs the manager's address")

        def record(tx: Tx) -> None:
            current = tx.node(req.node_id)
            if current is None:
                raise ControlError(StatusCode.NOT_FOUND, f"node {req.node_id} not found")
            current = copy(current)
            current.manager_status.addr = req.addr
            current.manager_status.reachability = pb.ManagerStatus.REACHABLE
            tx.update(current)

        try:
            await self.store.update(record)
            # Shielded: a caller that goes away must not leave the member half added (a
            # non-voter forever); it retries and finds the work done.
            await asyncio.shield(self.store_provider.add_member(req.node_id, req.addr))
        except StoreUnavailable as exc:
            raise RPCError(StatusCode.UNAVAILABLE, f"could not add the manager: {exc}") from None
        except ControlError as exc:
            raise RPCError(exc.code, exc.message) from None
        log.info("manager %s joined the store", req.node_id)
        return rpb.StoreJoinResponse().SerializeToString()
