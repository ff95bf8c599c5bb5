"""Each node's ``NetworkState``: what its network provider must realise, pushed in its session.

A node needs the other nodes' underlay addresses (VXLAN peers), its own ingress address,
every ingress published port with the running tasks behind it, and the discovery records of
every network it has a task on. Most of that is the same for every node, so a change is
computed ONCE for the whole swarm (``build``: a ``NetworkPicture`` holding each part already
serialised) and each node's message is a slice of it: protobuf's encoding of a message is the
concatenation of its fields' encodings, so a node's state is a few byte strings joined, not a
message rebuilt per node. At 1000 nodes a change costs one pass over the store and 1000 joins.

Only tasks whose desired state and reported state are both RUNNING receive connections
(backends and records). A task whose healthcheck fails is not RUNNING in shoal: the agent
reports it FAILED (and the orchestrator replaces it), so it leaves the rotation at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from shoal.manager.netendpoints import TaskEndpoints, holds_endpoint, receives_traffic
from shoal.manager.netobjects import node_ip, plain
from shoal.ports import protocol_name
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.store.memory import DELETE, Event, ObjectStore, ReadView

log = logging.getLogger("shoal.dispatcher")

#: How long the publisher gathers store changes before rebuilding (the push stays well
#: inside the 300 ms a change may take to reach the nodes).
DEBOUNCE = 0.02


@dataclass
class NetworkPicture:
    """The swarm's network state, serialised in parts; ``for_node`` joins one node's parts."""

    #: Every node's underlay IP once, sorted, each entry encoded as field 1 of NetworkState.
    peer_blob: bytes = b""
    #: IP -> (start, end) of its entry in ``peer_blob``.
    peer_spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    node_ips: dict[str, str] = field(default_factory=dict)
    #: Node ID -> its ingress attachment, encoded as field 2.
    node_ingress: dict[str, bytes] = field(default_factory=dict)
    #: Every ingress port, encoded as repeated field 3.
    ingress_ports: bytes = b""
    #: Network ID -> its records, encoded as one entry of field 4.
    records: dict[str, bytes] = field(default_factory=dict)
    #: Node ID -> the (non-ingress) networks it has a task on, sorted.
    node_networks: dict[str, tuple[str, ...]] = field(default_factory=dict)

    #: Network set -> ingress ports and those networks' records, joined (nodes share them).
    _tails: dict[tuple[str, ...], tuple[bytes, bytes]] = field(default_factory=dict)
    _peer_digest: bytes = b""

    def _tail(self, node_id: str) -> tuple[bytes, bytes]:
        """The part of the node's state it shares with every node on the same networks, and a
        digest of it."""
        networks = self.node_networks.get(node_id, ())
        tail = self._tails.get(networks)
        if tail is None:
            joined = self.ingress_ports + b"".join(self.records[n] for n in networks if n in self.records)
            tail = self._tails[networks] = (joined, hashlib.blake2b(joined, digest_size=16).digest())
        return tail

    def for_node(self, node_id: str) -> bytes:
        """The node's ``NetworkState``, serialised."""
        start, end = self.peer_spans.get(self.node_ips.get(node_id, ""), (0, 0))
        blob = self.peer_blob
        return b"".join(
            (blob[:start], blob[end:], self.node_ingress.get(node_id, b""), self._tail(node_id)[0])
        )

    def key_for(self, node_id: str) -> tuple[bytes, str, bytes, bytes]:
        """Equal for two pictures exactly when the node's state is (without building it):
        what a change check compares for each of a thousand nodes."""
        if not self._peer_digest:
            self._peer_digest = hashlib.blake2b(self.peer_blob, digest_size=16).digest()
        return (
            self._peer_digest,
            self.node_ips.get(node_id, ""),
            self.node_ingress.get(node_id, b""),
            self._tail(node_id)[1],
        )

    def message_for(self, node_id: str) -> rpb.NetworkState:
        return rpb.NetworkState.FromString(self.for_node(node_id))


def build(view: ReadView, endpoints: TaskEndpoints | None = None) -> NetworkPicture:
    """The whole swarm's picture from the committed state: one pass over nodes and services,
    and over the tasks that have networks unless ``endpoints`` (kept as the store applies)
    already holds what that pass finds."""
    picture = NetworkPicture()
    ingress_ids = {n.id for n in view.networks.all() if n.spec.ingress}
    _peers(view, picture)
    for node in view.nodes.all():
        for attachment in node.attachments:
            if attachment.network.id in ingress_ids:
                picture.node_ingress[node.id] = rpb.NetworkState(ingress=attachment).SerializeToString()
                break

    if endpoints is not None:
        running, node_networks = endpoints.running(), endpoints.node_networks(ingress_ids)
    else:
        running, node_networks = _scan_tasks(view, ingress_ids)
    picture.node_networks = {node: tuple(sorted(nets)) for node, nets in node_networks.items()}

    services = sorted(view.services.all(), key=lambda s: s.id)
    picture.ingress_ports = _ingress_ports(services, running, ingress_ids)
    wanted = set().union(*node_networks.values()) if node_networks else set()
    for network_id in sorted(wanted):
        picture.records[network_id] = _records(network_id, services, running)
    return picture


def _scan_tasks(
    view: ReadView, ingress_ids: set[str]
) -> tuple[dict[tuple[str, str], list[str]], dict[str, set[str]]]:
    """What ``TaskEndpoints`` keeps, from one pass over every task: (network ID, service ID) ->
    the serving tasks' addresses, and node ID -> the networks but ingress it has a live task on."""
    running: dict[tuple[str, str], list[str]] = {}
    node_networks: dict[str, set[str]] = {}
    for task in view.tasks.all():
        if not task.networks:
            continue
        live = holds_endpoint(task)
        serving = receives_traffic(task)
        for attachment in task.networks:
            network_id = attachment.network.id
            if live and network_id not in ingress_ids:
                node_networks.setdefault(task.node_id, set()).add(network_id)
            if serving:
                running.setdefault((network_id, task.service_id), []).extend(
                    plain(a) for a in attachment.addresses
                )
    return running, node_networks


def _peers(view: ReadView, picture: NetworkPicture) -> None:
    ips = set()
    for node in view.nodes.all():
        ip = node_ip(node)
        if ip:
            picture.node_ips[node.id] = ip
            ips.add(ip)
    blob = bytearray()
    for ip in sorted(ips):
        entry = rpb.NetworkState(peer_ips=[ip]).SerializeToString()
        picture.peer_spans[ip] = (len(blob), len(blob) + len(entry))
        blob += entry
    picture.peer_blob = bytes(blob)


def _ingress_ports(
    services: list[pb.Service], running: dict[tuple[str, str], list[str]], ingress_ids: set[str]
) -> bytes:
    state = rpb.NetworkState()
    for service in services:
        backends = sorted(a for n in ingress_ids for a in running.get((n, service.id), ()))
        for port in service.endpoint.ports:
            if port.publish_mode != pb.PortConfig.INGRESS or not port.published_port:
                continue
            state.ingress_ports.add(
                service_id=service.id,
                protocol=protocol_name(port),
                published=port.published_port,
                target=port.target_port,
                backends=backends,
            )
    return state.SerializeToString()


def _records(network_id: str, services: list[pb.Service], running: dict[tuple[str, str], list[str]]) -> bytes:
    entry = rpb.NetworkRecords(network_id=network_id)
    for service in services:
        configs = [c for c in service.spec.networks if c.target == network_id]
        addresses = running.get((network_id, service.id))
        if not configs and addresses is None:
            continue
        vip = next((plain(v.addr) for v in service.endpoint.virtual_ips if v.network_id == network_id), "")
        names = [service.spec.annotations.name]
        for config in configs:
            names.extend(a for a in config.aliases if a not in names)
        for name in names:
            entry.records.add(name=name, vip=vip, task_addresses=sorted(addresses or ()))
    return rpb.NetworkState(records=[entry]).SerializeToString()


def relevant(event: Event) -> bool:
    """Whether a committed change may change some node's network state."""
    if event.kind in ("service", "network"):
        return True
    if event.kind == "node":
        if event.action == DELETE or event.old is None:
            return True
        old: pb.Node = event.old
        new: pb.Node = event.obj
        if list(old.attachments) != list(new.attachments):
            return True
        # The address strings first: parsing them (``node_ip``) on every node write (a label,
        # a heartbeat's status) cost the leader more than the rest of this check.
        same_addrs = old.description.addr == new.description.addr and old.status.addr == new.status.addr
        return not same_addrs and node_ip(old) != node_ip(new)
    if event.kind == "task":
        task: pb.Task = event.obj
        if not task.networks:
            return False
        if event.action == DELETE or event.old is None:
            return True
        before: pb.Task = event.old
        return (
            before.status.state != task.status.state
            or before.desired_state != task.desired_state
            or before.node_id != task.node_id
            or len(before.networks) != len(task.networks)
        )
    return False


class NetworkStatePublisher:
    """Rebuilds the picture after relevant store changes and tells each subscribed session
    whose node's state changed (the dispatcher's sessions subscribe)."""

    def __init__(self, store: ObjectStore, debounce: float = DEBOUNCE) -> None:
        self.store = store
        self.debounce = debounce
        self._picture: NetworkPicture | None = None
        self._subscribers: dict[str, list[Callable[[], None]]] = {}
        self._last: dict[str, tuple[bytes, str, bytes, bytes]] = {}
        #: Builds, for tests and benchmarks.
        self.builds = 0
        #: Seconds the last rebuild and notification took.
        self.last_round = 0.0

    def picture(self) -> NetworkPicture:
        if self._picture is None:
            self._rebuild()
        assert self._picture is not None
        return self._picture

    def state_for(self, node_id: str) -> bytes:
        return self.picture().for_node(node_id)

    @contextmanager
    def subscribe(self, node_id: str, notify: Callable[[], None]) -> Iterator[None]:
        """Call ``notify`` whenever the node's state changes, while in the block."""
        self._subscribers.setdefault(node_id, []).append(notify)
        self._last.pop(node_id, None)  # the next rebuild tells it, whatever it was sent
        try:
            yield
        finally:
            callbacks = self._subscribers.get(node_id, [])
            if notify in callbacks:
                callbacks.remove(notify)
            if not callbacks:
                self._subscribers.pop(node_id, None)
                self._last.pop(node_id, None)

    def _rebuild(self) -> None:
        self._picture = build(self.store.view, self.store.derived(TaskEndpoints))
        self.builds += 1

    async def run(self) -> None:
        with self.store.watch(["task", "service", "network", "node"], where=relevant) as watch:
            self._rebuild()
            while True:
                await watch.get()
                # Gather for the debounce, or for twice what the last round cost when that is
                # more (a huge swarm under churn then spends at most a third of its time here).
                await asyncio.sleep(max(self.debounce, 2 * self.last_round))
                watch.drain()
                started = time.monotonic()
                try:
                    self._rebuild()
                    self._notify()
                except Exception:  # a bug here must not end every node's updates: the next change retries
                    log.exception("network state not rebuilt")
                self.last_round = time.monotonic() - started

    def _notify(self) -> None:
        picture = self.picture()
        for node_id, callbacks in list(self._subscribers.items()):
            key = picture.key_for(node_id)
            if self._last.get(node_id) == key:
                continue
            self._last[node_id] = key
            for notify in list(callbacks):
                notify()
