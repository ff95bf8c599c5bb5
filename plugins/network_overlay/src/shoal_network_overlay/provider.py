"""The overlay network provider: the three features of the network contract on one node.

It ties the parts together: ``overlay.OverlayDevices`` (bridges, VXLAN, veth endpoints),
``ingress.NodeTable`` (the node's nftables table: routing mesh, masquerade, VXLAN filter),
``firewall.DockerUserRules`` (forwarding through dockerd's firewall), ``vip`` (VIP load
balancing in each task's namespace) and ``dns`` (the resolver at 127.0.0.11 in each task's
namespace). Calls are serialised by one lock: the agent may call from several tasks, and each
change is a read-modify-write of kernel state.

Nothing is made on the host before it is needed: the node's table comes with its first
network or published port, and the ingress network (which every node is given) is realised on
the first published port with a backend or the first task attached to it. A node that never
carries traffic (most nodes of a test suite, several per network namespace) leaves no trace.

``netns`` runs the whole node in another network namespace (the tests' nodes); ``resolv_conf``
is where the host's resolvers are read (the tests point it at a resolver they run).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from shoal.plugin import (
    FEATURES,
    Backend,
    EndpointAttachment,
    NetworkError,
    NetworkSpec,
    NodeNetwork,
    PublishedPort,
    ServiceRecord,
)

from shoal_network_overlay import vip
from shoal_network_overlay.commands import Commands
from shoal_network_overlay.dns import Answerer, EndpointResolver, Records, Upstream
from shoal_network_overlay.firewall import DockerUserRules
from shoal_network_overlay.ingress import Forward, NodeTable, checked
from shoal_network_overlay.names import bridge_name, firewall_comment, node_digest, table_name
from shoal_network_overlay.overlay import OverlayDevices, check_spec

#: Where ``start`` records the node ID, so ``cleanup`` finds this node's devices and rules even
#: when it runs in a later process that never started (a node removed while stopped).
STATE_FILE = "node.json"


@dataclass
class Sandbox:
    """One task container's namespace: its endpoints (network ID -> task ID), its resolver and
    the VIP table last written there."""

    path: str
    endpoints: dict[str, str] = field(default_factory=dict)
    resolver: EndpointResolver | None = None
    vip_script: str = ""


class OverlayNetwork:
    """Realises the swarm's networks on one node (see the package docstring for the design)."""

    role: ClassVar[str] = "network"
    api_version: ClassVar[int] = 1
    features: ClassVar[frozenset[str]] = FEATURES

    def __init__(
        self,
        *,
        node_id: str = "",
        state_dir: Path | None = None,
        netns: str | None = None,
        resolv_conf: Path = Path("/etc/resolv.conf"),
    ) -> None:
        self.node_id = node_id
        self.state_dir = state_dir
        self.commands = Commands(netns)
        self.records = Records()
        self.answerer = Answerer(self.records, Upstream(resolv_conf, netns))
        self.node: NodeNetwork | None = None
        self.devices: OverlayDevices | None = None
        self.table: NodeTable | None = None
        self.firewall: DockerUserRules | None = None
        self.sandboxes: dict[str, Sandbox] = {}
        #: Every network ``create_network`` gave (realised or waiting for its first use).
        self.specs: dict[str, NetworkSpec] = {}
        #: Whether the node's table exists (made by this run or adopted from an earlier one).
        self.table_ready = False
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, node: NodeNetwork) -> None:
        """Create the node's table if missing and adopt what an earlier run left (devices and
        published ports stay as they are: established and new connections keep flowing)."""
        async with self._lock:
            digest = node_digest(node.node_id)
            devices = OverlayDevices(self.commands, digest, node.advertise_ip)
            table = NodeTable(self.commands, table_name(digest))
            self.table_ready = await table.exists()
            if self.table_ready:  # an earlier run's: adopt it (its ports keep forwarding)
                await table.ensure(node.advertise_ip)
            self.node, self.node_id, self.devices, self.table = node, node.node_id, devices, table
            self.firewall = DockerUserRules(self.commands, firewall_comment(digest))
            self._remember()

    async def cleanup(self) -> None:
        """Remove everything of this node: resolvers, VIP tables, DOCKER-USER rules, the node's
        table and every device named with its digest (whichever run made them)."""
        async with self._lock:
            node_id = self.node_id or self._recalled()
            for sandbox in list(self.sandboxes.values()):
                await self._forget_sandbox(sandbox)
            if node_id:
                digest = node_digest(node_id)
                await DockerUserRules(self.commands, firewall_comment(digest)).remove_all()
                await NodeTable(self.commands, table_name(digest)).remove()
                ip = self.node.advertise_ip if self.node else "127.0.0.1"
                await OverlayDevices(self.commands, digest, ip).remove_all()
            if self.devices is not None:
                self.devices.networks.clear()
                self.devices.tunnelled.clear()
            self.specs.clear()
            self.table_ready = False

    async def close(self) -> None:
        """Stop the resolvers (their sockets live in this process); the kernel data path stays."""
        async with self._lock:
            for sandbox in self.sandboxes.values():
                if sandbox.resolver is not None:
                    await sandbox.resolver.close()
                    sandbox.resolver = None
            self.sandboxes.clear()
            self.specs.clear()
            self.table_ready = False
            self.node = self.devices = self.table = self.firewall = None

    # ------------------------------------------------------------------ overlay

    async def set_peers(self, peer_ips: Sequence[str]) -> None:
        async with self._lock:
            devices, table = self._started()
            await devices.set_peers(peer_ips)
            if self.table_ready:
                await table.set_peers(devices.peers)

    async def create_network(self, network: NetworkSpec) -> None:
        """A network for a task arriving here is realised at once; the ingress network (every
        node gets it) waits for its first use, unless the node already carries traffic."""
        async with self._lock:
            devices, _ = self._started()
            check_spec(network)
            self.specs[network.network_id] = network
            if not network.ingress or self.table_ready or network.network_id in devices.networks:
                await self._realise(network)

    async def remove_network(self, network_id: str) -> None:
        async with self._lock:
            devices, table = self._started()
            self.specs.pop(network_id, None)
            spec = devices.networks.get(network_id)
            if spec is None:
                return
            for sandbox in list(self.sandboxes.values()):
                task_id = sandbox.endpoints.get(network_id)
                if task_id is not None:
                    await self._detach(sandbox, task_id, network_id)
            await devices.remove_network(network_id)
            assert self.firewall is not None
            await self.firewall.forget(bridge_name(devices.digest, spec.vni))
            if spec.ingress:
                await table.set_ingress_bridge(None)

    async def attach(self, attachment: EndpointAttachment) -> None:
        async with self._lock:
            devices, _ = self._started()
            spec = self.specs.get(attachment.network_id)
            if spec is None:
                raise NetworkError(
                    f"overlay: network {attachment.network_id} does not exist on this node (create_network first)"
                )
            if attachment.network_id not in devices.networks:
                await self._realise(spec)
            await devices.attach(attachment)
            sandbox = self.sandboxes.setdefault(attachment.sandbox, Sandbox(attachment.sandbox))
            sandbox.endpoints[attachment.network_id] = attachment.task_id
            try:
                if sandbox.resolver is None:
                    resolver = EndpointResolver(attachment.sandbox, self.answerer)
                    await resolver.open()
                    sandbox.resolver = resolver
                sandbox.resolver.networks.add(attachment.network_id)
                await self._write_vips(sandbox)
            except NetworkError:
                # all or nothing: a task that cannot resolve or balance is not half attached
                await self._detach(sandbox, attachment.task_id, attachment.network_id)
                await devices.detach(attachment.task_id, attachment.network_id)
                raise

    async def detach(self, task_id: str, network_id: str) -> None:
        async with self._lock:
            devices, _ = self._started()
            for sandbox in list(self.sandboxes.values()):
                if sandbox.endpoints.get(network_id) == task_id:
                    await self._detach(sandbox, task_id, network_id)
            await devices.detach(task_id, network_id)

    # ------------------------------------------------------------------ ingress

    async def publish(self, port: PublishedPort, backends: Sequence[Backend]) -> None:
        async with self._lock:
            devices, table = self._started()
            addresses = tuple(dict.fromkeys(b.address.split("/")[0] for b in backends))
            forward = checked(Forward(port.protocol, port.published, port.target, addresses))
            if not addresses and not self.table_ready:
                return  # nothing was published here: nothing to close
            for spec in self.specs.values():
                if spec.ingress and spec.network_id not in devices.networks:
                    await self._realise(spec)  # the backends are on the ingress network
            await self._ensure_table()
            await table.publish(forward)

    async def unpublish(self, protocol: str, published: int) -> None:
        async with self._lock:
            _, table = self._started()
            if self.table_ready:
                await table.unpublish(protocol, published)

    # ------------------------------------------------------------------ discovery

    async def set_records(self, network_id: str, records: Sequence[ServiceRecord]) -> None:
        async with self._lock:
            self._started()
            vip.vip_script(records)  # refuses malformed addresses before anything changes
            self.records.set(network_id, records)
            for sandbox in self.sandboxes.values():
                if network_id in sandbox.endpoints:
                    await self._write_vips(sandbox)

    async def resolve(self, network_id: str, name: str) -> list[str]:
        self._started()
        return self.records.lookup([network_id], name) or []

    # ------------------------------------------------------------------ internals

    def _started(self) -> tuple[OverlayDevices, NodeTable]:
        if self.devices is None or self.table is None:
            raise NetworkError("the overlay network plugin is not started (start(node) first)")
        return self.devices, self.table

    async def _ensure_table(self) -> None:
        devices, table = self._started()
        if not self.table_ready:
            assert self.node is not None
            await table.ensure(self.node.advertise_ip)
            await table.set_peers(devices.peers)
            self.table_ready = True

    async def _realise(self, spec: NetworkSpec) -> None:
        """Make the network's devices (and, for the ingress network, its forwarding)."""
        devices, table = self._started()
        await self._ensure_table()
        await devices.create_network(spec)
        bridge = devices.bridge(spec)
        assert self.firewall is not None
        await self.firewall.allow(bridge)
        if spec.ingress:
            await self.commands.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
            await self.commands.run("sysctl", "-qw", f"net.ipv4.conf.{bridge}.route_localnet=1")
            await table.set_ingress_bridge(bridge, spec.host_address)

    async def _write_vips(self, sandbox: Sandbox) -> None:
        records = [r for network_id in sandbox.endpoints for r in self.records.by_network.get(network_id, ())]
        script = vip.vip_script(records)
        if script != sandbox.vip_script:
            await self.commands.run("nft", "-f", "-", stdin=script, netns=sandbox.path)
            sandbox.vip_script = script

    async def _detach(self, sandbox: Sandbox, task_id: str, network_id: str) -> None:
        del sandbox.endpoints[network_id]
        if sandbox.resolver is not None:
            sandbox.resolver.networks.discard(network_id)
        if sandbox.endpoints:
            await self._write_vips(sandbox)
        else:
            await self._forget_sandbox(sandbox)

    async def _forget_sandbox(self, sandbox: Sandbox) -> None:
        """Close its resolver and remove its VIP table (the container may be gone: fine)."""
        self.sandboxes.pop(sandbox.path, None)
        if sandbox.resolver is not None:
            await sandbox.resolver.close()
            sandbox.resolver = None
        if sandbox.vip_script and os.path.exists(sandbox.path):  # noqa: ASYNC240 (one stat)
            await self.commands.run(
                "nft", "-f", "-", stdin=vip.remove_script(), netns=sandbox.path, check=False
            )
        sandbox.vip_script = ""

    def _remember(self) -> None:
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.state_dir / STATE_FILE).write_text(json.dumps({"node_id": self.node_id}))

    def _recalled(self) -> str:
        if self.state_dir is None:
            return ""
        try:
            return str(json.loads((self.state_dir / STATE_FILE).read_text()).get("node_id", ""))
        except (OSError, ValueError):
            return ""
