"""The manager half of a node: the store replica and, while leader, the control loops.

Every manager holds the object store (fed by the store provider). The one that leads also
runs the dispatcher, the replicated orchestrator, the scheduler driver and the task reaper;
they start when the store provider reports leadership and stop when it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from shoal import externalca, rpc
from shoal.manager.caserver import CAServer
from shoal.manager.controlapi import ControlAPI, ControlError
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.observers import TaskStateObservers
from shoal.manager.orchestrator import ReplicatedOrchestrator
from shoal.manager.reaper import TaskReaper
from shoal.manager.scheduler_driver import SchedulerDriver
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.ca import CAProvider, RootMaterial
from shoal.roles.scheduler import SchedulerProvider
from shoal.roles.store import StoreProvider, StoreUnavailable
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode
from shoal.store.memory import ObjectStore, Tx, copy

log = logging.getLogger("shoal.manager")


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
        node_filters: Callable[[], list[Any]] = list,
        task_state_changed: Callable[..., Any] | None = None,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.advertise_addr = advertise_addr
        self.store_provider = store_provider
        self.ca = ca
        self.scheduler_factory = scheduler_factory
        self.node_filters = node_filters
        self.task_state_changed = task_state_changed
        self.store = ObjectStore()
        self.store.provider = store_provider
        self.control = ControlAPI(self.store, node_id)
        self.ca_server = CAServer(self.store, ca, cluster_id)
        self.dispatcher: Dispatcher | None = None
        self._components: list[Any] = []
        self._leadership: asyncio.Task[None] | None = None
        self._ca_config: asyncio.Task[None] | None = None
        self._transition = asyncio.Lock()

    async def start(self, *, bootstrap: bool, init: Callable[[Tx], None] | None = None) -> None:
        await self.store_provider.start(self.store, bootstrap=bootstrap)
        if init is not None:
            await self.store.update(init)
        cluster = self.store.view.cluster()
        if cluster is None:
            raise RuntimeError("the store holds no cluster object: the manager state is damaged")
        await self.ca.configure(externalca.from_spec(cluster))
        await self.ca.load_root(
            RootMaterial(cert_pem=cluster.root_ca.ca_cert, key_pem=cluster.root_ca.ca_key)
        )
        self._leadership = asyncio.create_task(self._follow_leadership(), name="leadership")
        self._ca_config = asyncio.create_task(self._follow_external_cas(), name="external-cas")

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

    async def stop(self) -> None:
        for task in (self._leadership, self._ca_config):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._step_down()
        await self.store_provider.stop()

    def is_leader(self) -> bool:
        return self.store_provider.is_leader()

    # ------------------------------------------------------------------ leadership

    async def _follow_leadership(self) -> None:
        async for leader in self.store_provider.leadership():
            async with self._transition:
                if leader:
                    await self._become_leader()
                else:
                    await self._step_down()

    async def _become_leader(self) -> None:
        if self._components:
            return
        log.info("this node is now the leader")
        cluster = self.store.view.cluster()
        assert cluster is not None
        self.dispatcher = Dispatcher(self.store, self.cluster_id, [self.advertise_addr])
        scheduler = SchedulerDriver(self.store, self.scheduler_factory(), self.node_filters())
        self._components = [
            self.dispatcher,
            ReplicatedOrchestrator(self.store),
            scheduler,
            TaskReaper(self.store),
        ]
        if self.task_state_changed is not None:
            self._components.append(TaskStateObservers(self.store, self.task_state_changed))
        for component in self._components:
            component.start()
        await self._mark_self_leader()

    async def _step_down(self) -> None:
        components, self._components = self._components, []
        self.dispatcher = None
        for component in reversed(components):
            with contextlib.suppress(Exception):
                await component.stop()

    async def _mark_self_leader(self) -> None:
        def mark(tx: Tx) -> None:
            node = tx.node(self.node_id)
            if node is None:
                return
            node = copy(node)
            node.manager_status.leader = True
            node.manager_status.reachability = pb.ManagerStatus.REACHABLE
            node.manager_status.addr = self.advertise_addr
            tx.update(node)

        try:
            await self.store.update(mark)
        except StoreUnavailable as exc:
            log.warning("could not record leadership: %s", exc)

    # ------------------------------------------------------------------ RPC handlers

    def _leader_dispatcher(self) -> Dispatcher:
        if self.dispatcher is None:
            raise RPCError(StatusCode.UNAVAILABLE, "this manager is not the leader")
        return self.dispatcher

    def rpc_handlers(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Transport handlers: dispatcher calls go to the leader's dispatcher; CA calls to the
        CA server (issuing needs the leader, which writes the node object)."""

        async def heartbeat(request: bytes, peer: PeerIdentity | None) -> bytes:
            return await self._leader_dispatcher().heartbeat(request, peer)

        async def update_task_status(request: bytes, peer: PeerIdentity | None) -> bytes:
            return await self._leader_dispatcher().update_task_status(request, peer)

        async def issue(request: bytes, peer: PeerIdentity | None) -> bytes:
            self._leader_dispatcher()  # raises UNAVAILABLE on a follower
            return await self.ca_server.issue(request, peer)

        async def session(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
            async for message in self._leader_dispatcher().session(request, peer):
                yield message

        async def assignments(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
            async for message in self._leader_dispatcher().assignments(request, peer):
                yield message

        async def control(request: bytes, peer: PeerIdentity | None) -> bytes:
            """The control API for other managers (forwarding): manager certificates only."""
            rpc.authorize(peer, self.cluster_id, managers_only=True)
            call = rpb.ControlRequest.FromString(request)
            handler = self.control.handlers().get(call.method)
            if handler is None:
                raise RPCError(StatusCode.UNIMPLEMENTED, f"unknown control method {call.method}")
            try:
                result = await handler(json.loads(call.json_body or b"{}"))
            except ControlError as exc:
                raise RPCError(exc.code, exc.message) from None
            return rpb.ControlResponse(json_body=json.dumps(result).encode()).SerializeToString()

        unary_handlers = {
            rpc.CONTROL: control,
            rpc.HEARTBEAT: heartbeat,
            rpc.UPDATE_TASK_STATUS: update_task_status,
            rpc.GET_ROOT_CA: self.ca_server.get_root,
            rpc.ISSUE_NODE_CERTIFICATE: issue,
        }
        stream_handlers = {rpc.SESSION: session, rpc.ASSIGNMENTS: assignments}
        return unary_handlers, stream_handlers
