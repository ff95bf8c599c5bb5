"""The dispatcher: the leader's end of every agent's session.

Agents open a session (their identity comes from their certificate), send heartbeats,
receive their assignments as a stream (a complete set first, then incremental changes) and
report task status. Status reports are buffered and written in one store transaction every
100 ms, as SwarmKit does, so a burst of task transitions costs one commit rather than many.
A node that misses three heartbeat periods is marked DOWN ("heartbeat failure"). Session opens
are admitted by a ``RegistrationGate``: beyond what it can register at once, an open is turned
away at once with a retry-after, so a herd of reopening agents is spread instead of timing out.
Who may call is decided before these handlers run, by ``rpc.guard`` (``Access.NODE``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

from shoal import rpc, states
from shoal.ids import new_id
from shoal.manager.deliveries import Delivery, NodeDependencies, SecretValue
from shoal.manager.netalloc import AllocationError
from shoal.manager.netobjects import Allocations, ingress_of
from shoal.manager.netstate import NetworkStatePublisher
from shoal.manager.nodetaskfeed import NodeTaskFeed
from shoal.manager.servicecounts import ServiceTaskCounts
from shoal.manager.sessiongate import DEFAULT_LIMIT, RegistrationGate
from shoal.pacing import Pacer
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.secrets import SecretFetchError
from shoal.roles.store import StoreUnavailable
from shoal.roles.transport import PeerIdentity, RPCError, StatusCode
from shoal.store.memory import DELETE, UPDATE, Event, ObjectStore, ReadView, Tx, copy

log = logging.getLogger("shoal.dispatcher")

STATUS_FLUSH_INTERVAL = 0.1
#: Status commits that may follow each other at once after a quiet spell (``Pacer``'s burst):
#: the last task of a small service is not held back by the commits just before it. A service
#: of 4 replicas makes about six (its tasks' Preparing/Starting batches, then each Running as
#: its container starts); with 3, its last Running waited for the next token in 1 of 4-8
#: creates (54-84 ms, issue 18 item 4). A sustained stream is still one commit per interval.
STATUS_FLUSH_BURST = 10
#: Status updates written per store transaction; the rest go with the next flush. 10,000 tasks
#: starting at once reported thousands of updates per flush: one entry that held every
#: manager's loop while it was built, replicated and applied.
MAX_STATUS_PER_COMMIT = 500
#: Session opens registered at once (``sessiongate``); more are told to come back later.
MAX_CONCURRENT_REGISTRATIONS = DEFAULT_LIMIT
#: How often, at most, the nodes that reopened without an ingress address are given one (one
#: transaction, one scan of the addresses in use, for all that came in meanwhile).
INGRESS_FILL_INTERVAL = 0.5
ASSIGNMENT_DEBOUNCE = 0.05
#: Assignment messages that may follow each other at once after a quiet spell (``Pacer``'s
#: burst): a small service created just after another change to the node (the last service's
#: removal, a task told to stop) goes at once instead of waiting out the interval that change
#: started (40-47 ms between the placement and the message, back-to-back creates of 4 on the
#: fake runtime, issue 18 item 4). A sustained stream is still one message per interval.
ASSIGNMENT_BURST = 3
#: How long an agent may hold the status reports of tasks nobody waits for soon
#: (``AssignmentsMessage.report_within_ms``, see ``Dispatcher._report_within_ms``). A node of a
#: big service gets its tasks one by one (100,000 replicas on 1,000 nodes: one per node about
#: every 0.7 s), and each task's RUNNING was an UpdateTaskStatus call of its own, ~100,000
#: unary calls costing the leader and the agents. Held 1 s, a call carries a node's tasks of
#: about a second (0.15 calls per task), and the service's last tasks are not held at all.
REPORT_HOLD_MS = 1000
#: A message's reports may be held only while each of its tasks' services has at least this
#: many tasks desired running but not running yet: nobody waits for one task among them (the
#: service is far from converged), while a small service, a rolling update's few new tasks, a
#: restarted task and the last tasks of a big create are waited for, and report at once.
HOLD_MIN_UNSETTLED = 1000
#: The reports of tasks being removed (``service rm``, a scale down: desired REMOVE) may be held
#: only while their service has at least this many such tasks still to stop: removing 100,000
#: replicas cost one UpdateTaskStatus call per task (each SHUTDOWN reported alone), and nobody
#: waits for one among them (``service rm`` returns at once, a scale converges on the tasks
#: left running), while the last ones, and a small service's, are reported at once.
HOLD_MIN_STOPPING = 1000
#: How long an assignment message of a big create's new tasks waits for the node's next ones
#: (``Dispatcher._gather``): a node of 100,000 replicas on 1,000 nodes gets one about every
#: 0.7 s, so a message carries two or three instead of one.
ASSIGNMENT_GATHER = 1.0
#: A message waits for the node's next tasks only while each of its tasks' services has at
#: least this many still to be placed on nodes (about one more for each of 1,000 nodes).
GATHER_MIN_UNPLACED = 1000
GRACE_MULTIPLIER = 3
HEARTBEAT_EPSILON = 0.5


@dataclass
class _Session:
    session_id: str
    node_id: str
    #: When the node is declared down without another heartbeat: 3 periods after the last one,
    #: with the period this dispatcher told the agent at that time (a changed period only
    #: applies from the agent's next heartbeat, so changing it never downs live nodes).
    expires_at: float = 0.0
    #: ``Dispatcher.stalled`` at the last heartbeat: the leader's stalls since push the expiry back.
    stalled_at: float = 0.0


class Dispatcher:
    """Serves the dispatcher RPCs on the leader."""

    def __init__(
        self,
        store: ObjectStore,
        cluster_id: str,
        manager_addrs: Callable[[], list[str]],
        secret_value: SecretValue | None = None,
    ) -> None:
        self.store = store
        #: Opens a secret for a task's assignment (the leader's secrets providers).
        self.secret_value = secret_value or _no_secret_values
        self.cluster_id = cluster_id
        #: Every manager's address (the leader's first), asked afresh for each session message
        #: so agents learn of managers that join later and can fail over to them.
        self.manager_addrs = manager_addrs
        #: ``manager_ids`` as last computed, with the applied store index it holds for.
        self._manager_ids: tuple[int, tuple[str, ...]] | None = None
        self._sessions: dict[str, _Session] = {}
        #: Status updates not yet written, oldest first (an OrderedDict: a flush takes its
        #: oldest MAX_STATUS_PER_COMMIT in O(batch), the backlog is not copied).
        self._pending_status: collections.OrderedDict[str, tuple[str, pb.TaskStatus]] = (
            collections.OrderedDict()
        )
        self._flush_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started_at = time.monotonic()
        #: Seconds the heartbeat monitor woke later than asked, summed: time this leader's
        #: loop could serve no heartbeat. A node is not blamed for it (``_expired``).
        self.stalled = 0.0
        #: Rounds the heartbeat monitor has made (tests wait on it).
        self.monitor_rounds = 0
        #: Bounded concurrent registrations; opens beyond them get a retry-after.
        self.gate = RegistrationGate(MAX_CONCURRENT_REGISTRATIONS, max_delay=self.heartbeat_period)
        #: Registrations under way by node ID: a retry joins its node's instead of starting
        #: another (an agent that timed out while its write was queued would double the herd).
        self._registrations: dict[str, asyncio.Task[None]] = {}
        #: Nodes this leader could give no ingress address (the subnet is full): their next
        #: registration does not try again (each try scanned every task and node for the
        #: addresses in use, and logged a line: 750 of 1,000 hollow nodes reconnecting).
        self._without_ingress: set[str] = set()
        #: Known, Ready nodes that reopened their session without an ingress address: given
        #: one in the background, in batches (``_fill_ingress``), not on their session's path.
        self._ingress_wanted: set[str] = set()
        self._ingress_wakeup = asyncio.Event()
        #: Each node's NetworkState, computed once per change for the whole swarm.
        self.network_state = NetworkStatePublisher(store)
        #: Task events routed to the assignment stream of their node (one watch for all).
        self.node_tasks = NodeTaskFeed(store)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="dispatcher-flush"),
            asyncio.create_task(self._heartbeat_monitor(), name="dispatcher-heartbeats"),
            asyncio.create_task(self.network_state.run(), name="dispatcher-network-state"),
            asyncio.create_task(self.node_tasks.run(), name="dispatcher-node-tasks"),
            asyncio.create_task(self._fill_ingress(), name="dispatcher-node-ingress"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        registrations = list(self._registrations.values())
        for task in registrations:
            task.cancel()
        await asyncio.gather(*self._tasks, *registrations, return_exceptions=True)
        self._tasks = []
        self._registrations.clear()
        self._sessions.clear()

    # ------------------------------------------------------------------ helpers

    def heartbeat_period(self) -> float:
        cluster = self.store.view.cluster()
        if cluster is not None and cluster.spec.dispatcher.heartbeat_period > 0:
            return cluster.spec.dispatcher.heartbeat_period
        return 5.0

    def _session_for(self, session_id: str, peer: PeerIdentity) -> _Session:
        session = self._sessions.get(session_id)
        if session is None or session.node_id != peer.node_id:
            raise RPCError(StatusCode.NOT_FOUND, "session invalid: open a new session")
        return session

    # ------------------------------------------------------------------ Session

    async def session(self, request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        peer = rpc.caller(peer)  # authorised by rpc.guard (Access.NODE)
        req = rpb.SessionRequest.FromString(request)
        registering = self._registrations.get(peer.node_id)
        if registering is None and not self._reopened(peer.node_id, req.description):
            if not self.gate.enter():
                # Turned away at once, before any work: the agent comes back when told.
                yield rpb.SessionMessage(retry_after=self.gate.retry_after()).SerializeToString()
                return
            registering = self._start_registration(peer.node_id, req.description)
        session = _Session(
            new_id(),
            peer.node_id,
            self._expiry(time.monotonic() + self.heartbeat_period() * GRACE_MULTIPLIER),
            self.stalled,
        )
        for old_id, old in list(self._sessions.items()):
            if old.node_id == peer.node_id:
                del self._sessions[old_id]
        self._sessions[session.session_id] = session
        if registering is not None:
            # Shielded: an agent that gives up waiting leaves the write to finish for its retry.
            await asyncio.shield(registering)
        # Only events that may change what an agent acts on wake the session (a label write
        # would otherwise wake every session on the leader).
        with (
            self.store.watch(["node", "cluster"], where=_may_change_agent_views) as watch,
            self.network_state.subscribe(peer.node_id, lambda: watch.queue.put_nowait(_NETWORK_CHANGED)),
        ):
            sent = self._agent_view(peer.node_id)
            sent_network = self.network_state.state_for(peer.node_id)
            yield self._session_bytes(session, sent_network)
            while session.session_id in self._sessions:
                event = await watch.get()
                if event.kind == "node" and event.action == DELETE and event.obj.id == peer.node_id:
                    raise RPCError(
                        StatusCode.PERMISSION_DENIED, f"node {peer.node_id} was removed from the swarm"
                    )
                view = self._agent_view(peer.node_id)
                network = self.network_state.state_for(peer.node_id)
                if view == sent and network == sent_network:
                    continue  # e.g. a label change, or another worker: nothing the agent acts on
                sent, sent_network = view, network
                yield self._session_bytes(session, network)

    def _start_registration(self, node_id: str, description: pb.NodeDescription) -> asyncio.Task[None]:
        """The node's registration as a task of its own, known by node ID until it ends. It
        holds its gate slot until then, also when the agent that asked stopped waiting."""
        began = time.monotonic()
        task = asyncio.create_task(self._register(node_id, description), name=f"register-{node_id}")
        self._registrations[node_id] = task

        def ended(done: asyncio.Task[None]) -> None:
            self.gate.leave(time.monotonic() - began)
            if self._registrations.get(node_id) is done:
                del self._registrations[node_id]
            if not done.cancelled():
                done.exception()  # retrieved: the session that awaited it has reported it

        task.add_done_callback(ended)
        return task

    async def _register(self, node_id: str, description: pb.NodeDescription) -> None:
        """Record the node as Ready with its description and an ingress address. Nothing is
        written when the store already says so: after a leader change a thousand nodes
        reconnect and are Ready already, and a thousand writes would only delay them.

        A node that is Ready with this description but has no ingress address (beyond a full
        /24: 750 of 1,000 hollow nodes) reopens at once too (``_reopened``); its address is
        looked for in the background with the others'. Each looked for it in a transaction of
        its own, a scan of every task and node: after an election a group commit ran 64 such
        scans back to back, seconds of the new leader's loop, and the last of 1,000 sessions
        reopened 10 s after the old leader died."""
        if self._reopened(node_id, description):
            return

        def register(tx: Tx) -> None:
            node = tx.node(node_id)
            if node is None:
                return
            updated = copy(node)
            updated.description.CopyFrom(description)
            updated.status.state = pb.NodeStatus.READY
            updated.status.message = ""
            try:
                Allocations.of(tx).node_ingress(updated)  # its source address for ingress forwarding
            except AllocationError as exc:
                # A full ingress subnet (a /24 holds 253 nodes) must not keep a node out of the
                # swarm: it runs tasks, it only cannot forward ingress connections (Swarm too).
                self._without_ingress.add(node_id)
                log.warning("node %s has no ingress address: %s", node_id, exc)
            if updated != node:
                tx.update(updated)

        await self.store.update(register)

    def _reopened(self, node_id: str, description: pb.NodeDescription) -> bool:
        """Whether the node's registration would write nothing: it is known, Ready, with this
        description (every node reopening after a leader change). Such a reopen takes no gate
        slot and waits for no write: after an election a thousand of them were turned away
        by the 64-wide gate and came back, each a stream opened twice. A missing ingress
        address is asked for in the background (``_fill_ingress``)."""
        view = self.store.view
        known = view.nodes.get(node_id)
        if known is None or not _registered(view, known, description):
            return False
        if node_id not in self._without_ingress and not _has_ingress(view, known):
            self._ingress_wanted.add(node_id)
            self._ingress_wakeup.set()
        return True

    async def _fill_ingress(self) -> None:
        """Give the Ready nodes that reopened without one an ingress address: one transaction
        for every node asking since the last (at most one per ``INGRESS_FILL_INTERVAL``)."""
        pacer = Pacer(INGRESS_FILL_INTERVAL)
        while True:
            await self._ingress_wakeup.wait()
            await pacer.pace()
            self._ingress_wakeup.clear()
            wanted, self._ingress_wanted = self._ingress_wanted, set()
            try:
                await self.store.update(functools.partial(self._attach_ingress, node_ids=wanted))
            except StoreUnavailable as exc:
                log.warning("could not give %d nodes an ingress address: %s", len(wanted), exc)

    def _attach_ingress(self, tx: Tx, node_ids: set[str]) -> None:
        """Ingress addresses for ``node_ids`` from one scan of the addresses in use. Once the
        subnet is full the rest are not tried (it stays full within the transaction), and are
        not tried again by this leader (as a refused registration); one line says so."""
        allocations = Allocations.of(tx)
        refused: list[str] = []
        error: AllocationError | None = None
        for node_id in sorted(node_ids):
            node = tx.node(node_id)
            if node is None or node.status.state != pb.NodeStatus.READY or _has_ingress(tx.view, node):
                continue
            if error is not None:
                refused.append(node_id)
                continue
            updated = copy(node)
            try:
                changed = allocations.node_ingress(updated)
            except AllocationError as exc:
                error = exc
                refused.append(node_id)
                continue
            if changed:
                tx.update(updated)
        self._without_ingress.update(refused)
        if error is not None:
            log.warning("%d nodes have no ingress address: %s", len(refused), error)

    def _agent_view(self, node_id: str) -> tuple[object, ...]:
        """What an agent acts on in its session messages: its role and desired role, the
        managers' addresses (to fail over), the heartbeat period and the root CA. A session
        message goes out when this changes, not on every change of the node object (a label
        change would otherwise cost a message to the agent per write)."""
        node = self.store.view.nodes.get(node_id)
        cluster = self.store.view.cluster()
        return (
            tuple(self.manager_addrs()),
            self.manager_ids(),
            self.heartbeat_period(),
            (node.role, node.spec.desired_role, node.spec.availability) if node is not None else None,
            cluster.root_ca.ca_cert if cluster is not None else b"",
        )

    def manager_ids(self) -> tuple[str, ...]:
        """The node IDs of the current managers, sent to agents: a worker serves manager-only
        calls (its tasks' logs) to these nodes alone. A manager being demoted (desired role
        worker) is left out at once, before its demotion completes.

        Computed once per applied store entry: every session message and every wake-up of a
        session asks, and a scan of every node each time made a thousand sessions quadratic
        (a quarter of the leader's CPU while 1,000 hollow nodes connected)."""
        index = self.store.applied_index
        if self._manager_ids is not None and self._manager_ids[0] == index:
            return self._manager_ids[1]
        ids = tuple(
            sorted(
                node.id
                for node in self.store.view.nodes.all()
                if node.role == pb.NodeSpec.MANAGER and node.spec.desired_role == pb.NodeSpec.MANAGER
            )
        )
        self._manager_ids = (index, ids)
        return ids

    def _session_bytes(self, session: _Session, network: bytes) -> bytes:
        """The session message with the node's serialised NetworkState appended as field 7
        (protobuf merges fields in any order): a large state is never parsed or re-encoded."""
        return (
            self._session_message(session).SerializeToString()
            + _NETWORK_TAG
            + _varint(len(network))
            + network
        )

    def _session_message(self, session: _Session) -> rpb.SessionMessage:
        message = rpb.SessionMessage(
            session_id=session.session_id,
            managers=self.manager_addrs(),
            manager_ids=self.manager_ids(),
            heartbeat_period=self.heartbeat_period(),
        )
        node = self.store.view.nodes.get(session.node_id)
        if node is not None:
            message.node.CopyFrom(node)
        cluster = self.store.view.cluster()
        if cluster is not None:
            message.root_ca = cluster.root_ca.ca_cert
        return message

    # ------------------------------------------------------------------ Heartbeat

    async def heartbeat(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        peer = rpc.caller(peer)  # authorised by rpc.guard (Access.NODE)
        req = rpb.HeartbeatRequest.FromString(request)
        session = self._session_for(req.session_id, peer)
        period = self.heartbeat_period()
        jitter = random.uniform(-HEARTBEAT_EPSILON, HEARTBEAT_EPSILON) if period > 1 else 0.0
        session.expires_at = self._expiry(time.monotonic() + (period + jitter) * GRACE_MULTIPLIER)
        session.stalled_at = self.stalled
        return rpb.HeartbeatResponse(period=period + jitter).SerializeToString()

    def _expiry(self, expires_at: float) -> float:
        """No node goes Down before this leader's start-up grace has passed (two grace
        periods, as for nodes that have not reconnected yet), as Swarm gives every node a
        grace after an election: when a thousand sessions reopen at once, their first
        heartbeats queue behind the herd, and a leader that downed them would replace all
        their tasks and feed the next election."""
        return max(expires_at, self._started_at + self.heartbeat_period() * GRACE_MULTIPLIER * 2)

    async def _heartbeat_monitor(self) -> None:
        """Every half period (at most a second): the nodes whose heartbeats stopped are marked
        Down. The time this leader's own loop was held does not count against them: at 30,000
        tasks on 300 hollow nodes the leader's loop was late by seconds at a time, every
        heartbeat waited behind it, and a monitor counting that time against the nodes would
        mark live nodes Down and have their tasks replaced, more work for a leader already
        behind. How late the monitor itself wakes measures it (``stalled``)."""
        while True:
            period = self.heartbeat_period()
            interval = min(1.0, period / 2)
            asked = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.stalled += max(0.0, now - asked - interval)
            self.monitor_rounds += 1
            deadline = period * GRACE_MULTIPLIER
            expired = [s for s in self._sessions.values() if now > s.expires_at + self.stalled - s.stalled_at]
            for session in expired:
                self._sessions.pop(session.session_id, None)
            down = {s.node_id for s in expired}
            # Nodes that never registered with this leader get the same grace from its start.
            if now - self._started_at - self.stalled > deadline * 2:
                live = {s.node_id for s in self._sessions.values()}
                for node in self.store.view.nodes.all():
                    if node.status.state != pb.NodeStatus.DOWN and node.id not in live:
                        down.add(node.id)
            if down:
                await self._mark_down(down)

    async def _mark_down(self, node_ids: set[str]) -> None:
        """Mark ``node_ids`` Down, except a node that has a session again by then; and a node
        that opened a session while the write was on its way (its registration saw it Ready and
        wrote nothing) is made Ready again once the write committed. Under load the write takes
        seconds; a node whose old session expired meanwhile reopened, and the Down that landed
        after its new registration stayed while its new session heartbeated on: 1 of 1,000
        hollow nodes stayed Down for minutes, its tasks replaced elsewhere."""

        def mark(tx: Tx) -> set[str]:
            return _set_node_state(tx, node_ids - self._live_nodes(), pb.NodeStatus.DOWN, "heartbeat failure")

        def ready_again(tx: Tx, marked: set[str]) -> None:
            _set_node_state(
                tx, marked & self._live_nodes(), pb.NodeStatus.READY, "", only_from=pb.NodeStatus.DOWN
            )

        try:
            marked = await self.store.update(mark)
            if marked & self._live_nodes():
                await self.store.update(functools.partial(ready_again, marked=marked))
        except StoreUnavailable as exc:
            log.warning("could not mark nodes down: %s", exc)

    def _live_nodes(self) -> set[str]:
        """The nodes with a session open on this leader."""
        return {session.node_id for session in self._sessions.values()}

    # ------------------------------------------------------------------ Assignments

    def _assigned(self, task: pb.Task, node_id: str) -> bool:
        return task.node_id == node_id and task.status.state >= states.ASSIGNED

    def _node_assigned(self, node_id: str) -> list[pb.Task]:
        return [t for t in self.store.view.node_tasks(node_id) if self._assigned(t, node_id)]

    async def assignments(self, request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
        peer = rpc.caller(peer)  # authorised by rpc.guard (Access.NODE)
        req = rpb.AssignmentsRequest.FromString(request)
        session = self._session_for(req.session_id, peer)
        node_id = peer.node_id
        sequence = 0
        dependencies = NodeDependencies(self.store, self.secret_value)
        pacer = Pacer(ASSIGNMENT_DEBOUNCE, burst=ASSIGNMENT_BURST)  # a few at once, a stream in batches
        #: What the agent was last sent of each task: a later version that differs only in its
        #: status is not sent again (below), nor even queued to this stream (``told``). Such a
        #: version takes the sent one's place (``_told``), so the store's task is the only one.
        sent: dict[str, pb.Task] = {}
        told = functools.partial(_told, sent)

        with self.node_tasks.subscribe(node_id, told) as watch:  # only this node's task events
            files = await dependencies.changes(self._node_assigned(node_id))
            self._reject(node_id, files.refused)
            assigned = [t for t in self._node_assigned(node_id) if t.id not in files.refused]
            sent.update((task.id, task) for task in assigned)
            sequence = 1
            yield _assignments_bytes(
                rpb.AssignmentsMessage(type=rpb.AssignmentsMessage.COMPLETE, results_in=1),
                files.before,  # a task's secrets and configs before the task
                {task.id: task for task in assigned},
                (),
            )
            while session.session_id in self._sessions:
                events = [await watch.get()]
                await pacer.pace()
                events.extend(watch.drain())
                #: Task ID -> the task to send, or None: its removal.
                changes: dict[str, pb.Task | None] = {}
                #: Task ID -> what the agent was last sent of a task removed (its service).
                removed: dict[str, pb.Task] = {}
                self._take(events, node_id, sent, changes, removed)
                if self._gather(changes, removed):
                    # The node's next tasks are on their way: they go in this message too.
                    await asyncio.sleep(ASSIGNMENT_GATHER)
                    self._take(watch.drain(), node_id, sent, changes, removed)
                files = Delivery()
                if dependencies.may_change(t for t in changes.values() if t is not None):
                    files = await dependencies.changes(self._node_assigned(node_id))
                    self._reject(node_id, files.refused)
                    for task_id in files.refused:  # held back: it could not run without them
                        if changes.get(task_id) is not None:
                            del changes[task_id]
                            sent.pop(task_id, None)
                if not changes and not files.before and not files.after:
                    continue
                message = rpb.AssignmentsMessage(
                    type=rpb.AssignmentsMessage.INCREMENTAL,
                    applies_to=sequence,
                    results_in=sequence + 1,
                    report_within_ms=self._report_within_ms(changes),
                )
                sequence += 1
                yield _assignments_bytes(message, files.before, changes, files.after)

    def _take(
        self,
        events: Iterable[Event],
        node_id: str,
        sent: dict[str, pb.Task],
        changes: dict[str, pb.Task | None],
        removed: dict[str, pb.Task],
    ) -> None:
        """Add to ``changes`` what ``events`` tell the agent of ``node_id`` beyond what it was
        ``sent`` (updated as it goes): a task to send, or None for its removal (and then to
        ``removed`` what was last sent of it: whose service it was)."""
        tasks = self.store.view.tasks
        for event in events:
            # The task as it is now: an event routed late never sends an older version.
            current = tasks.get(event.obj.id)
            task = event.obj if current is None else current
            if current is None or not self._assigned(task, node_id):
                gone = sent.pop(task.id, None)
                if gone is not None:
                    changes[task.id] = None
                    removed[task.id] = gone
                continue
            before = sent.get(task.id)
            if before is not None and _status_only_change(before, task):
                # What was sent (or is about to be) holds all but the status: not sent again,
                # and kept in its place (the same in every other field; see ``_told``).
                if before is not task:
                    sent[task.id] = task
                continue
            sent[task.id] = task
            changes[task.id] = task

    def _gather(self, changes: Mapping[str, pb.Task | None], removed: Mapping[str, pb.Task]) -> bool:
        """Whether a message of ``changes`` should wait ``ASSIGNMENT_GATHER`` for the node's next
        tasks: only when it holds nothing but new tasks to run of services with at least
        ``GATHER_MIN_UNPLACED`` tasks still to be placed (a big create or scale-up far from
        its end, whose nodes get more of them soon), or tasks told to go (desired REMOVE), or
        deleted (``removed``: what was last sent of them), of services with at least
        ``HOLD_MIN_STOPPING`` left to stop (a big ``service rm`` or scale down, marked 500 a
        transaction, its stopped tasks deleted by the reaper a transaction at a time). At
        100,000 replicas on 1,000 nodes a node got a task about every 0.7 s, each in a message
        of its own: one stream message on the leader and one on the agent per task; a removal
        sent about one per task as well, and its deletions 48,000 messages for 100,000 tasks
        (counted). A task told to SHUTDOWN (a rolling update's, a restart's, a drain's), a
        small service, a global service's new task and a big create's or removal's last tasks
        go at once, as before; so does the deletion of a task whose removal was not sent."""

        def far_test(task: pb.Task) -> _FarTest | None:
            if task.desired_state == states.REMOVE:
                return self._far_from_removed
            if task.desired_state == states.RUNNING and task.status.state == states.ASSIGNED:
                return self._far_from_placed
            return None

        def deleted(task_id: str) -> pb.Task | None:
            gone = removed.get(task_id)
            return gone if gone is not None and gone.desired_state == states.REMOVE else None

        return self._every_far(changes.items(), far_test, deleted)

    def _every_far(
        self,
        changes: Iterable[tuple[str, pb.Task | None]],
        far_test: Callable[[pb.Task], _FarTest | None],
        removal: Callable[[str], pb.Task | None] | None,
    ) -> bool:
        """Whether every task of ``changes`` (ID, task) passes the test ``far_test`` gives for
        it (None: it fails), asked once per service and desired state; False when no task was
        tested. A removal (None) passes when ``removal`` is None; else ``removal`` gives the
        task to test in its place (None: it fails). The one walk the gather and the status hold
        share: each only says which test a task takes."""
        counts: ServiceTaskCounts | None = None
        checked: set[tuple[str, int]] = set()
        for task_id, change in changes:
            task = change
            if task is None:
                if removal is None:
                    continue
                task = removal(task_id)
                if task is None:
                    return False
            far = far_test(task)
            if far is None:
                return False
            key = (task.service_id, task.desired_state)
            if key in checked:
                continue
            if counts is None:
                counts = self.store.derived(ServiceTaskCounts)
            if not far(task.service_id, counts):
                return False
            checked.add(key)
        return bool(checked)

    def _far_from_placed(self, service_id: str, counts: ServiceTaskCounts) -> bool:
        """Whether the service's new tasks may wait for the node's next ones: a replicated
        service with ``GATHER_MIN_UNPLACED`` tasks still to place."""
        return self._many_per_node(service_id) and counts.unplaced(service_id) >= GATHER_MIN_UNPLACED

    def _report_within_ms(self, changes: Mapping[str, pb.Task | None]) -> int:
        """How long the agent may hold the status reports of the tasks in ``changes`` (a
        message's tasks to send, None for a removal): ``REPORT_HOLD_MS`` when every task
        updated is either being started far from its service's end (``_far_from_running``) or
        being removed far from its service's last (``_far_from_removed``), else 0 (at once).
        O(changes): the counts are kept as the store applies (``ServiceTaskCounts``), no task is
        walked.

        A task told to SHUTDOWN (a rolling update's or a restart's old task, a drained node's)
        is never held: the updater and the restart supervisor wait for its report before they
        go on. Only REMOVE (``service rm``, a scale down) is."""

        def far_test(task: pb.Task) -> _FarTest | None:
            if task.desired_state == states.RUNNING:
                return self._far_from_running
            if task.desired_state == states.REMOVE:
                return self._far_from_removed
            return None

        # A removal (None): nothing to report.
        return REPORT_HOLD_MS if self._every_far(changes.items(), far_test, None) else 0

    def _far_from_running(self, service_id: str, counts: ServiceTaskCounts) -> bool:
        """Whether a new task of the service may have its reports held: the service still has
        ``HOLD_MIN_UNSETTLED`` tasks desired running but not running. A global service is
        never held: it puts one task on each node, so a node has no other task of it to
        gather, and a hold would only make its create a second longer.

        A rolling update waits for each new task's RUNNING before the next slot (holding every
        report made one 5.7 times as long), so a service with only a few tasks on their way
        (a small service, an update's parallelism, a restart, a big create's last tasks) is
        never held."""
        return (
            self._many_per_node(service_id)
            and counts.desired(service_id) - counts.running(service_id) >= HOLD_MIN_UNSETTLED
        )

    def _many_per_node(self, service_id: str) -> bool:
        """Whether the service exists and may put several tasks on a node (not global): only
        then has a node more of its tasks to gather or to report together."""
        service = self.store.view.services.get(service_id)
        return service is not None and service.spec.WhichOneof("mode") not in _ONE_TASK_PER_NODE_MODES

    def _far_from_removed(self, service_id: str, counts: ServiceTaskCounts) -> bool:
        """Whether a task being removed may have its SHUTDOWN held: its service still has
        ``HOLD_MIN_STOPPING`` tasks to stop. Those of a removed service (gone from the store)
        not marked for removal yet count too: the orchestrator marks them 500 a transaction,
        so its first messages would see only a few marked. The last ones go at once."""
        to_stop = counts.stopping(service_id)
        if self.store.view.services.get(service_id) is None:
            to_stop += counts.desired(service_id)
        return to_stop >= HOLD_MIN_STOPPING

    def _reject(self, node_id: str, refused: dict[str, str]) -> None:
        """Reject tasks whose secrets or configs could not be had, with the reason (written
        with the next status flush, as if the node had reported it)."""
        for task_id, error in refused.items():
            status = pb.TaskStatus(
                state=states.REJECTED, message="rejected", err=error, timestamp=time.time()
            )
            self._pending_status[task_id] = (node_id, status)
        if refused:
            self._flush_wakeup.set()

    # ------------------------------------------------------------------ UpdateTaskStatus

    async def update_task_status(self, request: bytes, peer: PeerIdentity | None) -> bytes:
        peer = rpc.caller(peer)  # authorised by rpc.guard (Access.NODE)
        req = rpb.UpdateTaskStatusRequest.FromString(request)
        self._session_for(req.session_id, peer)
        view = self.store.view
        for update in req.updates:
            task = view.tasks.get(update.task_id)
            if task is None:
                continue
            if task.node_id != peer.node_id:
                raise RPCError(
                    StatusCode.PERMISSION_DENIED,
                    f"task {update.task_id} is not assigned to node {peer.node_id}",
                )
            self._pending_status[update.task_id] = (peer.node_id, update.status)
        self._flush_wakeup.set()
        return rpb.UpdateTaskStatusResponse().SerializeToString()

    async def _flush_loop(self) -> None:
        """One store commit for the status updates of every node that came in meanwhile: at
        once after a quiet spell (up to STATUS_FLUSH_BURST in a row), one per
        STATUS_FLUSH_INTERVAL in a sustained stream; and at once while a whole batch
        (MAX_STATUS_PER_COMMIT) waits behind the last, since waiting gathers nothing more into
        it. The interval alone capped the status path at 5,000 updates a second: a 100,000
        create's reports came faster, and its last tasks' RUNNING waited seconds behind them."""
        pacer = Pacer(STATUS_FLUSH_INTERVAL, burst=STATUS_FLUSH_BURST)
        while True:
            await self._flush_wakeup.wait()
            if len(self._pending_status) < MAX_STATUS_PER_COMMIT:
                await pacer.pace()
            self._flush_wakeup.clear()
            pending = self._take_pending_status()
            if not pending:
                continue
            try:
                await self.store.update(functools.partial(self._apply_status, pending=pending))
            except StoreUnavailable as exc:
                log.warning("dropping %d task status updates: %s", len(pending), exc)

    def _take_pending_status(self) -> dict[str, tuple[str, pb.TaskStatus]]:
        """The oldest MAX_STATUS_PER_COMMIT buffered updates; the rest wait for the next flush
        (which is woken at once, paced like any burst). Taken off the front one by one: at
        100,000 tasks the backlog held tens of thousands of updates, and copying the rest into
        a new dict at each flush (ten a second) cost the leader's loop that many entries each
        time."""
        if len(self._pending_status) <= MAX_STATUS_PER_COMMIT:
            everything, self._pending_status = self._pending_status, collections.OrderedDict()
            return everything
        oldest = self._pending_status.popitem
        batch = dict(oldest(last=False) for _ in range(MAX_STATUS_PER_COMMIT))
        self._flush_wakeup.set()
        return batch

    def _apply_status(self, tx: Tx, pending: dict[str, tuple[str, pb.TaskStatus]]) -> None:
        now = time.time()
        for task_id, (node_id, status) in pending.items():
            task = tx.task(task_id)
            if task is None or task.node_id != node_id:
                continue
            current = task.status
            if status.state < current.state:
                continue  # states only move forward
            if status.state == current.state and status.message == current.message:
                continue
            # Stamped on the report (this flush's own: taken out of the buffer) before it is
            # copied in, rather than on the copy: each field reached through the task's
            # status costs a lookup of the status first, for every status written.
            status.applied_by = node_id
            status.applied_at = now
            task = copy(task)
            task.status.CopyFrom(status)
            tx.update(task)


def _set_node_state(
    tx: Tx, node_ids: set[str], state: int, message: str, *, only_from: int | None = None
) -> set[str]:
    """Give each of ``node_ids`` (that exists, is not in ``state`` already, and is in
    ``only_from`` if given) ``state`` with ``message``; the IDs changed."""
    changed: set[str] = set()
    for node_id in node_ids:
        node = tx.node(node_id)
        if node is None or node.status.state == state:
            continue
        if only_from is not None and node.status.state != only_from:
            continue
        node = copy(node)
        node.status.state = state  # type: ignore[assignment]
        node.status.message = message
        tx.update(node)
        changed.add(node_id)
    return changed


def _assignments_bytes(
    message: rpb.AssignmentsMessage,
    before: Iterable[rpb.AssignmentChange],
    changes: dict[str, pb.Task | None],
    after: Iterable[rpb.AssignmentChange],
) -> bytes:
    """``message`` with ``before``, each of ``changes`` (a task to update, or None: its removal)
    and ``after``, serialised. Each task is copied once, into the message's own change:
    ``AssignmentChange(task=task)`` copied it into a change of its own, and the message's
    constructor that change again (2.5 -> 1.2 us per task, and a node gets each of its tasks
    in a message of its own at 100,000 replicas)."""
    add = message.changes.add
    for change in before:
        add().CopyFrom(change)
    for task_id, task in changes.items():
        if task is None:
            add(action=rpb.AssignmentChange.REMOVE).task.id = task_id
        else:
            add().task.CopyFrom(task)  # action UPDATE: the default
    for change in after:
        add().CopyFrom(change)
    return message.SerializeToString()


#: A test of whether a service is far from its end (the gather's and the hold's).
_FarTest = Callable[[str, ServiceTaskCounts], bool]
#: Service modes that put at most one task on a node: no report of theirs is held.
_ONE_TASK_PER_NODE_MODES = frozenset({"global", "global_job"})
#: Put in a session's queue when its node's NetworkState changed (not a store event).
_NETWORK_CHANGED = Event(UPDATE, "networkstate", None)
#: SessionMessage field 7 (``network``), length-delimited.
_NETWORK_TAG = bytes([7 << 3 | 2])


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


async def _no_secret_values(secret: pb.Secret, task: pb.Task) -> bytes:
    raise SecretFetchError(f"this dispatcher has no secrets provider (secret {secret.spec.annotations.name})")


def _registered(view: ReadView, node: pb.Node, description: pb.NodeDescription) -> bool:
    """Whether ``node`` already is what its registration would write, but for an ingress
    address (given in the background, ``_fill_ingress``): Ready, with ``description``, and
    attached to no network that is gone."""
    if node.status.state != pb.NodeStatus.READY or node.status.message or node.description != description:
        return False
    return all(view.networks.get(a.network.id) is not None for a in node.attachments)


def _has_ingress(view: ReadView, node: pb.Node) -> bool:
    """Whether ``node`` is attached to the ingress network (True when there is none)."""
    ingress = ingress_of(view.networks.all())
    return ingress is None or any(a.network.id == ingress.id for a in node.attachments)


def _told(sent: dict[str, pb.Task], event: Event) -> bool:
    """Whether the agent has all of ``event``'s task but its status already (``sent``: what
    its stream last sent of each task): a status it reported itself, most task events, which
    the feed then does not queue to the stream. The event's task then takes the sent one's
    place: it differs from it in its status alone, so every later comparison comes out the
    same, while the version sent (ASSIGNED) is let go. Kept, it was a second Task message per
    task on the leader beside the store's (~1.2 KB each: ~120 MB at 100,000 replicas)."""
    task = event.obj
    before = sent.get(task.id)
    if before is None or event.action == DELETE or not _status_only_change(before, task):
        return False
    if before is not task:
        sent[task.id] = task
    return True


def _status_only_change(sent: pb.Task, task: pb.Task) -> bool:
    """Whether ``task`` differs from the version ``sent`` to its agent only in its status,
    past ASSIGNED: a status the agent itself reported (or one about it). SwarmKit's dispatcher
    does not send those back (``TasksEqualStable``): each task's ACCEPTED, PREPARING, STARTING
    and RUNNING came back to its agent as a whole task, four assignment messages per task,
    40,000 at 10,000 replicas, for nothing the agent acts on."""
    if task.status.state <= states.ASSIGNED:
        return False  # the orchestrator's and scheduler's states: the agent acts on them
    if sent is task:
        return True
    # Field by field, stopping at the first difference: listing both tasks' fields
    # (``ListFields``) and comparing the lists cost 11 us per event, 2.7 us this way, and a
    # stream sees four such events per task. (An unset submessage and a set empty one compare
    # equal here: the same to the agent.)
    for name in _STABLE_FIELDS:
        if getattr(sent, name) != getattr(task, name):
            return False
    return True


#: Every Task field but its status and its store version (``meta``), as SwarmKit compares: the
#: desired state first, then the other scalars, then the submessages (a task told to stop, two
#: events per task removed, was found to differ only after comparing its whole spec: 2.2 us,
#: 0.35 this way).
_STABLE_FIELDS = tuple(
    sorted(
        (f.name for f in pb.Task.DESCRIPTOR.fields if f.name not in {"status", "meta"}),
        key=lambda name: (
            name != "desired_state",
            pb.Task.DESCRIPTOR.fields_by_name[name].message_type is not None,
        ),
    )
)


def _may_change_agent_views(event: Event) -> bool:
    """Whether ``event`` may change what any agent acts on (see ``Dispatcher._agent_view``).

    Every session watches every node event, and an agent's view holds every manager's address,
    so rebuilding views on each event costs sessions x nodes per event. An update of a node that
    leaves its role, desired role, availability and manager status alone (a label, its status,
    its description) changes no agent's view: the sessions' watches leave it out, so it does
    not even wake them.
    """
    if event.kind != "node" or event.action != UPDATE or event.old is None:  # a delete: always
        return True
    old: pb.Node = event.old
    new: pb.Node = event.obj
    return (
        old.role != new.role
        or old.spec.desired_role != new.spec.desired_role
        or old.spec.availability != new.spec.availability
        or old.manager_status != new.manager_status
    )
