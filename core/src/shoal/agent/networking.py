"""The agent's side of the network role: turn what the managers sent into provider calls.

Two things drive the node's network provider:

- the session's ``NetworkState`` (re-sent by the dispatcher whenever it changes): the other
  nodes' underlay addresses (``set_peers``), this node's ingress address (the ingress network is
  created on every node, task or not: every node accepts published ports), every ingress port
  with its backends (``publish``/``unpublish``, diffed by protocol and published port) and the
  discovery records of each network this node has a task on (``set_records``);
- the node's tasks: a task with ``networks`` gets each network created (first use on the node)
  and its endpoint attached in its container's namespace (``/proc/<pid>/ns/net``) after the
  container starts and before the task is reported RUNNING; on removal its endpoints are
  detached and a network no local task uses any more is removed.

The managers learn of a task's death a heartbeat or a status batch later; the mesh must not
wait for that. A local task whose container exits (or is being stopped) is dropped from this
node's ingress backends and discovery answers at once, and kept out of them until the managers'
state no longer lists it.

State is applied by one background loop that always works from the newest state (a burst of
session messages costs one round of calls), and all provider calls go through one lock, so the
provider never sees two calls at once from this node. A failed round is retried after
``RETRY_SECONDS`` (the managers may not re-send an unchanged state).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.network import (
    FEATURE_DISCOVERY,
    FEATURE_INGRESS,
    FEATURE_OVERLAY,
    Backend,
    EndpointAttachment,
    NetworkError,
    NetworkProvider,
    NetworkSpec,
    PublishedPort,
    ServiceRecord,
)

log = logging.getLogger("shoal.agent")

#: A failed round of state calls is tried again after this long.
RETRY_SECONDS = 1.0
#: A temporary attach failure (device busy) is retried this many times before the task fails.
ATTACH_ATTEMPTS = 3

PortKey = tuple[str, int]


def plain(address: str) -> str:
    """``10.0.1.5/24`` -> ``10.0.1.5`` (records and backends carry plain addresses)."""
    return address.split("/", 1)[0]


def network_spec(network: pb.Network, host_address: str = "") -> NetworkSpec:
    """The provider's view of a network object the managers allocated."""
    return NetworkSpec(
        network_id=network.id,
        name=network.spec.annotations.name,
        subnet=network.allocated.subnet,
        gateway=network.allocated.gateway,
        vni=network.vni,
        options=dict(network.spec.driver_opts),
        ingress=network.spec.ingress,
        host_address=host_address,
    )


@dataclass(frozen=True)
class _Port:
    """One ingress port as last published here (compared to skip unchanged re-publishing)."""

    port: PublishedPort
    backends: tuple[str, ...]


class NodeNetworking:
    """Drives one node's network provider from the session state and the node's tasks.

    ``provider`` is None on a node without a network plugin: tasks without networks run as
    before, a task with networks fails with one line saying why.
    """

    def __init__(self, provider: NetworkProvider | None) -> None:
        self.provider = provider
        self._lock = asyncio.Lock()
        self._state: rpb.NetworkState | None = None
        self._wakeup = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        #: Networks created on this node, by ID, and the local tasks that use each.
        self._networks: dict[str, set[str]] = {}
        #: The networks each local task is attached to (what to detach at removal).
        self._attached: dict[str, list[str]] = {}
        #: Plain addresses of local tasks that exited or are stopping, by task ID.
        self._gone: dict[str, set[str]] = {}
        #: The node's ingress network, as the state last gave it (created here while set).
        self._ingress: pb.NetworkAttachment | None = None
        #: What the provider was last told, to send only changes.
        self._peers: tuple[str, ...] | None = None
        self._published: dict[PortKey, _Port] = {}
        self._records: dict[str, tuple[ServiceRecord, ...]] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.provider is not None and self._loop is None:
            self._loop = asyncio.create_task(self._apply_loop(), name="agent-networking")

    async def close(self) -> None:
        """Stop applying state; the data path stays (a restarted daemon adopts it)."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    def _features(self) -> frozenset[str]:
        return self.provider.features if self.provider is not None else frozenset()

    # ------------------------------------------------------------------ session state

    def submit(self, state: rpb.NetworkState) -> None:
        """The session sent a new state: apply it soon (only the newest one counts)."""
        self._state = state
        self._wakeup.set()

    async def _apply_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.apply()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a provider failure must not end the loop: retry
                log.warning("network state not applied (retrying in %.0fs): %s", RETRY_SECONDS, exc)
                await asyncio.sleep(RETRY_SECONDS)
                self._wakeup.set()

    async def apply(self) -> None:
        """Bring the provider in line with the newest state and the local tasks' lives."""
        state = self._state
        if state is None or self.provider is None:
            return
        async with self._lock:
            features = self._features()
            if FEATURE_OVERLAY in features:
                await self._apply_peers(state)
                await self._apply_ingress_network(state, create=True)
            if FEATURE_INGRESS in features:
                await self._apply_ports(state)
            if FEATURE_OVERLAY in features:
                await self._apply_ingress_network(state, create=False)
            if FEATURE_DISCOVERY in features:
                await self._apply_records(state)
            self._forget_gone(state)

    async def _apply_peers(self, state: rpb.NetworkState) -> None:
        assert self.provider is not None
        peers = tuple(sorted(set(state.peer_ips)))
        if peers != self._peers:
            await self.provider.set_peers(list(peers))
            self._peers = peers

    async def _apply_ingress_network(self, state: rpb.NetworkState, *, create: bool) -> None:
        """Every node has the ingress network while the swarm publishes an ingress port and
        gives the node an address there; without ports it has none (nothing to forward: a swarm
        that publishes nothing leaves no device on its nodes). Created before the ports are
        published (``create``), removed after they are unpublished."""
        assert self.provider is not None
        ingress = state.ingress if state.HasField("ingress") and state.ingress.network.id else None
        wanted = ingress if ingress is not None and ingress.addresses and state.ingress_ports else None
        old = self._ingress
        if create and wanted is not None:
            if old is not None and old.network.id != wanted.network.id:
                self._ingress = None
                await self._release(old.network.id)
            await self._create(network_spec(wanted.network, wanted.addresses[0]))
            self._ingress = wanted
        elif not create and wanted is None and old is not None:
            self._ingress = None
            await self._release(old.network.id)

    async def _apply_ports(self, state: rpb.NetworkState) -> None:
        assert self.provider is not None
        gone = self._gone_addresses()
        wanted: dict[PortKey, _Port] = {}
        for port in state.ingress_ports:
            published = PublishedPort(port.service_id, port.protocol, port.published, port.target)
            backends = tuple(sorted({b for b in port.backends if b not in gone}))
            wanted[(port.protocol, port.published)] = _Port(published, backends)
        for key in [k for k in self._published if k not in wanted]:
            await self.provider.unpublish(*key)
            del self._published[key]
        for key, entry in wanted.items():
            if self._published.get(key) != entry:
                await self.provider.publish(entry.port, [Backend("", a) for a in entry.backends])
                self._published[key] = entry

    async def _apply_records(self, state: rpb.NetworkState) -> None:
        """Records for the networks created here (the others wait for their first task)."""
        assert self.provider is not None
        gone = self._gone_addresses()
        wanted = {
            entry.network_id: tuple(
                ServiceRecord(r.name, r.vip, tuple(a for a in r.task_addresses if a not in gone))
                for r in entry.records
            )
            for entry in state.records
        }
        for network_id in self._networks:
            records = wanted.get(network_id, ())
            if self._records.get(network_id, ()) != records:
                await self.provider.set_records(network_id, records)
                self._records[network_id] = records

    def _gone_addresses(self) -> set[str]:
        return {address for addresses in self._gone.values() for address in addresses}

    def _forget_gone(self, state: rpb.NetworkState) -> None:
        """A gone task the managers no longer list needs no filtering any more (and its
        address may go to a new task)."""
        listed = {b for port in state.ingress_ports for b in port.backends}
        listed |= {a for entry in state.records for r in entry.records for a in r.task_addresses}
        for task_id in [t for t, addresses in self._gone.items() if not addresses & listed]:
            if task_id not in self._attached:
                del self._gone[task_id]

    # ------------------------------------------------------------------ tasks

    async def attach(self, task: pb.Task, pid: int) -> None:
        """Give a started task its endpoints (idempotent: a re-adopted task is attached again
        without harm). Raises ``NetworkError`` with one line when the task cannot have them."""
        if not task.networks:
            return
        if self.provider is None:
            raise NetworkError("this node has no network plugin: tasks with networks cannot run here")
        if pid <= 0:
            return  # the container exited already: nothing to attach; its exit is reported
        self._gone.pop(task.id, None)
        async with self._lock:
            for attachment in task.networks:
                await self._attach_one(task, attachment, pid)
        self._wakeup.set()  # its records may wait for its network to exist here

    async def _attach_one(self, task: pb.Task, attachment: pb.NetworkAttachment, pid: int) -> None:
        assert self.provider is not None
        network = attachment.network
        name = network.spec.annotations.name or network.id
        if not attachment.addresses:
            raise NetworkError(f"task {task.id} has no address on network {name}")
        host_address = ""
        if self._ingress is not None and self._ingress.network.id == network.id:
            host_address = self._ingress.addresses[0]
        await self._create(network_spec(network, host_address))
        self._networks[network.id].add(task.id)
        attached = self._attached.setdefault(task.id, [])
        if network.id not in attached:
            attached.append(network.id)
        endpoint = EndpointAttachment(
            task_id=task.id,
            network_id=network.id,
            address=attachment.addresses[0],
            aliases=tuple(attachment.aliases),
            sandbox=f"/proc/{pid}/ns/net",
        )
        for attempt in range(1, ATTACH_ATTEMPTS + 1):
            try:
                await self.provider.attach(endpoint)
                return
            except NetworkError as exc:
                if not exc.temporary or attempt == ATTACH_ATTEMPTS:
                    raise
                await asyncio.sleep(0.1 * attempt)

    async def _create(self, spec: NetworkSpec) -> None:
        assert self.provider is not None
        if spec.network_id not in self._networks:
            await self.provider.create_network(spec)
            self._networks[spec.network_id] = set()

    def task_stopped(self, task: pb.Task) -> None:
        """The task's container exited or is about to be stopped: no new connection or lookup
        should reach it from this node, whatever the managers still say."""
        addresses = {plain(a) for attachment in task.networks for a in attachment.addresses}
        if not addresses or self.provider is None:
            return
        self._gone.setdefault(task.id, set()).update(addresses)
        self._wakeup.set()

    async def detach(self, task: pb.Task) -> None:
        """The task is removed: take its endpoints away, and the networks no task here uses."""
        networks = self._attached.pop(task.id, [])
        if self.provider is None or not networks:
            return
        async with self._lock:
            for network_id in networks:
                try:
                    await self.provider.detach(task.id, network_id)
                except NetworkError as exc:
                    log.warning("task %s: detach from %s failed: %s", task.id, network_id, exc)
                users = self._networks.get(network_id)
                if users is not None:
                    users.discard(task.id)
                    await self._release(network_id)

    async def _release(self, network_id: str) -> None:
        """Remove a network nobody here uses (the node's own ingress network stays)."""
        assert self.provider is not None
        users = self._networks.get(network_id)
        node_uses = self._ingress is not None and self._ingress.network.id == network_id
        if users is None or users or node_uses:
            return
        del self._networks[network_id]
        self._records.pop(network_id, None)
        try:
            await self.provider.remove_network(network_id)
        except NetworkError as exc:
            log.warning("network %s not removed: %s", network_id, exc)

    def networks(self) -> Iterable[str]:
        """The networks created on this node (for tests and diagnostics)."""
        return list(self._networks)
