"""Which tasks serve on each network and which nodes need each network, kept as the store applies.

Every node's ``NetworkState`` (``netstate.build``) is made of the running tasks' addresses per
(network, service) — the discovery records and the ingress backends — and of the networks each
node has a live task on. Building them walked every task of the store on each rebuild: at
20,000 tasks on overlay networks ~160 ms of the leader's loop, repeated as often as every
third of its time while tasks start and stop. ``TaskEndpoints`` listens to the store's applies
(``ObjectStore.derived``) and changes both by the difference each task change makes, so a
rebuild costs what the records hold, not what the store holds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shoal.manager.netobjects import plain
from shoal.proto import objects_pb2 as pb
from shoal.states import ASSIGNED, RUNNING
from shoal.store.memory import DELETE, Event, ObjectStore, ReadView, Restoring, finish, visit_in_steps


def receives_traffic(task: pb.Task) -> bool:
    """A backend and a discovery answer: wanted running and running."""
    return task.desired_state == RUNNING and task.status.state == RUNNING


def holds_endpoint(task: pb.Task) -> bool:
    """The task's node needs its networks: it is assigned there and has not ended."""
    return bool(task.node_id) and ASSIGNED <= task.status.state <= RUNNING


@dataclass
class _Serving:
    """The serving tasks' attachments to one network of one service."""

    attachments: int = 0
    addresses: Counter[str] = field(default_factory=Counter)


def _same_endpoints(old: pb.Task, new: pb.Task) -> bool:
    """Whether ``new`` counts exactly as ``old`` did (a timestamp or message changed)."""
    return (
        receives_traffic(old) == receives_traffic(new)
        and holds_endpoint(old) == holds_endpoint(new)
        and old.node_id == new.node_id
        and old.service_id == new.service_id
        and old.networks == new.networks
    )


class TaskEndpoints:
    """The serving addresses per (network, service) and the live networks per node."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._serving: dict[tuple[str, str], _Serving] = {}
        self._node_networks: dict[str, Counter[str]] = {}

    # ------------------------------------------------------------------ ApplyListener

    def restored(self) -> None:
        finish(self.restoring(self.store.view))()

    def restoring(self, view: ReadView) -> Restoring:
        """Count ``view``'s tasks a step at a time (``ObjectStore.restore_steps``), aside."""
        fresh = TaskEndpoints(self.store)
        yield from visit_in_steps(view.tasks.all(), lambda task: fresh._count(task, 1))
        return lambda: vars(self).update(vars(fresh))

    def applied(self, events: list[Event]) -> None:
        for event in events:
            if event.kind != "task":
                continue
            old: pb.Task | None = event.old
            if event.action == DELETE:
                self._count(event.obj, -1)
                continue
            if not event.obj.networks and (old is None or not old.networks):
                continue  # most tasks: no networks, nothing to count (the cheapest test first)
            if old is not None:
                if _same_endpoints(old, event.obj):
                    continue
                self._count(old, -1)
            self._count(event.obj, 1)

    def _count(self, task: pb.Task, sign: int) -> None:
        if not task.networks:
            return
        live, serving = holds_endpoint(task), receives_traffic(task)
        for attachment in task.networks:
            network_id = attachment.network.id
            if live:
                networks = self._node_networks.setdefault(task.node_id, Counter())
                networks[network_id] += sign
                if not networks[network_id]:
                    del networks[network_id]
                    if not networks:
                        del self._node_networks[task.node_id]
            if serving:
                key = (network_id, task.service_id)
                entry = self._serving.setdefault(key, _Serving())
                entry.attachments += sign
                addresses = entry.addresses
                for address in attachment.addresses:
                    address = plain(address)
                    count = addresses[address] + sign
                    if count:
                        addresses[address] = count
                    else:
                        del addresses[address]
                if not entry.attachments:
                    del self._serving[key]

    # ------------------------------------------------------------------ reads

    def running(self) -> dict[tuple[str, str], list[str]]:
        """(network ID, service ID) -> the serving tasks' addresses (a key for each pair with a
        serving task, as ``netstate.build``'s pass over the tasks makes it)."""
        return {key: list(entry.addresses.elements()) for key, entry in self._serving.items()}

    def node_networks(self, leave_out: set[str]) -> dict[str, set[str]]:
        """Node ID -> the networks, but ``leave_out``, it has a live task on (nodes with none
        left out)."""
        found = {}
        for node_id, networks in self._node_networks.items():
            wanted = {n for n in networks if n not in leave_out}
            if wanted:
                found[node_id] = wanted
        return found
