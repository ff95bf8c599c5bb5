"""The agent: the worker half of every node.

It opens a session with a manager's dispatcher over the transport (mutual TLS, its node
certificate is its identity), heartbeats, receives its assignments and runs one
``TaskController`` per task, reporting status in batches. If the manager is lost it keeps its
tasks running and reconnects with SwarmKit's backoff (100 ms doubling to 8 s, randomised; back
to the start once a session had opened, so a leader change costs a short random wait, not the
longest one reached before). A leader busy registering other nodes turns the open away with a
retry-after, which the agent honours before it opens its session with that manager again. A
heartbeat or status report that times out (a busy leader answers late) is retried within the
session; only when no heartbeat was answered for the leader's node expiry is the session reopened.
What it was assigned is persisted, so after a restart it re-adopts its containers instead of
starting them again, and removes containers of its own that nobody assigned.

Its engine is reached through ``BoundedRuntime``: at most ``max_engine_calls`` operations at
once, however many tasks it runs, so a huge service queues here instead of drowning the
engine, and the session (heartbeats, status reports), which never waits on the engine, keeps
flowing. Removal converges: besides removing each removed task's container, the agent sweeps
the engine for containers labelled with its node that no task accounts for (created by a call
whose answer never came, or by a create still in flight when the task went) after every
removal and every ``STRAY_SWEEP_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from google.protobuf import json_format

from shoal import rpc, states, tasktemplates
from shoal.agent.controller import TaskController
from shoal.agent.enginegate import DEFAULT_MAX_CONCURRENT_ENGINE_CALLS, BoundedRuntime
from shoal.agent.networking import NodeNetworking
from shoal.agent.secrets import TaskFileStore
from shoal.agent.sessiontrace import SessionTrace
from shoal.agent.taskdb import TaskDB
from shoal.pacing import Pacer
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.network import NetworkProvider
from shoal.roles.runtime import ContainerRef, EngineInfo, RuntimeError_, RuntimeProvider
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial, TransportProvider

log = logging.getLogger("shoal.agent")

RPC_TIMEOUT = 5.0
STATUS_BATCH_INTERVAL = 0.05
#: Status reports that may follow each other at once after a quiet spell (``Pacer``'s burst):
#: a small service's last task reports RUNNING when it starts, not one interval later. With 3,
#: the fourth RUNNING of a service of 4 whose containers started within 50 ms of each other
#: (each its own call) waited 25 ms for a token (1 of 8 podman creates, issue 18 item 4), as
#: the dispatcher's commits did with 3 (``STATUS_FLUSH_BURST``). A sustained stream is still one
#: call per STATUS_BATCH_INTERVAL.
STATUS_BATCH_BURST = 10
#: A held task's task DB writes may wait this much longer than its status report may: the
#: report flushes them before it goes (one transaction per report, not one per task as well).
TASK_DB_AFTER_HOLD = 0.5
BACKOFF_BASE = 0.1
BACKOFF_MAX = 8.0
#: Assignment changes applied between two turns of the event loop (each costs task DB writes).
YIELD_EVERY = 256
#: How often the agent looks for containers of its node that no task accounts for.
STRAY_SWEEP_SECONDS = 30.0
#: After removals, at most one sweep per this many seconds (the first at once): a sweep lists
#: every container of the node, and a big service removed a task at a time (``service rm`` of
#: 100,000 replicas on 1,000 nodes: a node's 100 tasks one by one) swept after each removal.
STRAY_SWEEP_AFTER_REMOVAL_INTERVAL = 1.0
#: Heartbeat periods without an answered heartbeat after which the leader counts the node Down
#: (the dispatcher's ``GRACE_MULTIPLIER``): only then does an agent whose heartbeats time out
#: reopen its session, since the leader has dropped it anyway.
NODE_EXPIRY_PERIODS = 3
#: How a heartbeat or status call can fail and leave the session as it was, to be tried again:
#: late (the deadline passed), or dropped on the way (CANCELLED from the peer: at 10,000
#: replicas on 1,000 hollow nodes gRPC ended ~860 status reports and ~640 heartbeats of a run
#: so, while the leader's loop was busy, and each ended its session and cost a reopen). Both
#: calls are idempotent; any other failure (session unknown, not the leader, refused) ends the
#: session. A call the agent cancels itself raises CancelledError, not this.
RETRIED_CALL_FAILURES = frozenset({StatusCode.DEADLINE_EXCEEDED, StatusCode.CANCELLED})
#: A heartbeat or status call that failed so is tried again this long after it was sent (a
#: heartbeat: at most a quarter period), not sooner: a call that timed out (5 s) goes again at
#: once, but CANCELLED comes back at once from an overloaded leader, and the agent tried again
#: every 50 ms (at 100,000 replicas on 1,000 hollow nodes the traces showed heartbeats retried
#: 70 ms apart, status reports 94 ms: each node ~20 calls a second at a leader that could not
#: answer them). The leader's node expiry is 3 heartbeat periods (15 s): a dozen tries before.
FAILED_CALL_RETRY_SECONDS = 1.0


def description_from(
    info: EngineInfo, hostname: str, runtime_name: str, *, generic: Sequence[pb.GenericResource] = ()
) -> pb.NodeDescription:
    """The node as it registers: the engine's facts, plus the generic resources (``gpu=2``)
    the daemon was told it offers (``--node-generic-resource``)."""
    return pb.NodeDescription(
        hostname=hostname or info.hostname,
        platform=pb.Platform(os=info.os, arch=info.arch),
        resources=pb.Resources(nano_cpus=info.nano_cpus, memory_bytes=info.memory_bytes, generic=generic),
        engine=pb.EngineDescription(
            engine_version=info.engine_version, labels=info.labels, runtime=runtime_name
        ),
    )


def _held(task: pb.Task, status: pb.TaskStatus) -> bool:
    """Whether ``status`` of ``task`` may wait as long as the task's assignment allows: a step
    up to RUNNING, or, for a task told to stop (desired past RUNNING: the manager allows a
    hold only while many of a removed service's tasks are stopping), its stop (SHUTDOWN, or
    COMPLETE if it exited meanwhile). An exit or a failure of a task wanted running is never
    held, nor a failed stop."""
    state = status.state
    if state <= states.RUNNING:
        return True
    return task.desired_state > states.RUNNING and state in (states.COMPLETE, states.SHUTDOWN)


def _db_wait(hold: float) -> float | None:
    """How long a task DB write of a task whose reports may wait ``hold`` may wait (None: the
    DB's own delay): past the report, which commits it."""
    return hold + TASK_DB_AFTER_HOLD if hold > 0 else None


class SessionDeferred(Exception):
    """The leader turned the session open away for now: open it again in ``retry_after`` s."""

    def __init__(self, manager: str, retry_after: float) -> None:
        super().__init__(
            f"{manager} is registering other nodes; opening the session again in {retry_after:.1f}s"
        )
        self.retry_after = retry_after


class Agent:
    """Runs this node's tasks as its managers tell it to."""

    def __init__(
        self,
        *,
        node_id: str,
        state_dir: Path,
        runtime: RuntimeProvider,
        runtime_name: str,
        transport: TransportProvider,
        tls: Callable[[], TLSMaterial],
        managers: list[str],
        hostname: str = "",
        on_node: Callable[[pb.Node], None] | None = None,
        on_managers: Callable[[list[str]], None] | None = None,
        max_engine_calls: int = DEFAULT_MAX_CONCURRENT_ENGINE_CALLS,
        serve_addr: str = "",
        network: NetworkProvider | None = None,
        generic_resources: Sequence[pb.GenericResource] = (),
    ) -> None:
        self.node_id = node_id
        #: ``--node-generic-resource``: reported with the node's description.
        self.generic_resources = tuple(generic_resources)
        #: The node's network provider, driven from the session state and the tasks.
        self.networking = NodeNetworking(network)
        #: Where this node serves managers (its tasks' logs), told to them with each session.
        self.serve_addr = serve_addr
        self.runtime = BoundedRuntime(runtime, max_engine_calls)
        self.runtime_name = runtime_name
        self.transport = transport
        self.tls = tls
        self.managers = list(managers)
        #: Node IDs of the current managers as the leader last said (None: not told yet). The
        #: node serves manager-only calls to these alone (see ``rpc.certificate_checker``).
        self.manager_ids: frozenset[str] | None = None
        self.hostname = hostname
        #: This node as it last described itself: what ``{{.Node.Hostname}}`` and the other
        #: node placeholders of a task's templates stand for (tasktemplates).
        self.description = pb.NodeDescription(hostname=hostname)
        #: Told of every version of this node's object the managers send (role changes).
        self.on_node = on_node
        #: Told of every new manager list (leader first), to keep it across restarts.
        self.on_managers = on_managers
        self.db = TaskDB(state_dir / "worker" / "tasks.db")
        self.controllers: dict[str, TaskController] = {}
        #: The held tasks whose last status is RUNNING (see ``tasks_running``).
        self._running: set[str] = set()
        #: Secret and config values for this node's tasks, in memory only.
        self.files = TaskFileStore()
        self.connected = asyncio.Event()
        #: When (wall clock) the session now open was opened: a fleet's "all back" after a
        #: leader change is every node connected with a session newer than the change.
        self.session_opened_at = 0.0
        self.node: pb.Node | None = None
        self._pending: dict[str, pb.TaskStatus] = {}
        self._status_wakeup = asyncio.Event()
        #: By when (``time.monotonic``) the queued statuses must go: at once (-inf) for a state
        #: a task rests at, later for a step on the way or a held status (``_report_status``).
        self._report_due = math.inf
        #: Set when ``_report_due`` moved earlier.
        self._report_sooner = asyncio.Event()
        #: Per task, how long its latest assignment lets its statuses wait (seconds; the
        #: manager's ``report_within_ms``), until it reaches RUNNING, or, told to stop, until
        #: it stopped (``_held``): tasks nobody waits for.
        self._holds: dict[str, float] = {}
        self._main: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_wanted = asyncio.Event()
        #: Removals under way, by task ID: they run on their own, so that removing thousands
        #: of tasks (each waiting its turn for the engine) never holds up new assignments.
        self._removing: dict[str, asyncio.Task[None]] = {}
        self._reconciled_once = False
        #: A follower sent us to the leader (now first in ``managers``): the next try goes there.
        self._redirected = False
        #: The manager whose session was lost last (the leader then), until a new one opens:
        #: told to the next manager, which waits for an election rather than send us back.
        self._lost_leader = ""
        #: The recent session steps (lost, tried, redirected, deferred, opened), with times.
        self.trace = SessionTrace()

    @property
    def tasks_held(self) -> int:
        """Tasks this node still holds: those it runs or will, and removals under way."""
        return len(self.controllers) + len(self._removing)

    @property
    def tasks_running(self) -> int:
        """Held tasks whose last status is RUNNING, kept as statuses change: a hollow fleet's
        status file asks twice a second, and walking 50,000 controllers per process each time
        was 3% of a hollow process's samples."""
        return len(self._running)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        with contextlib.suppress(RuntimeError_):
            self.description = description_from(
                await self.runtime.describe(),
                self.hostname,
                self.runtime_name,
                generic=self.generic_resources,
            )
        self.networking.start()
        await self._readopt()
        self._main = asyncio.create_task(self._run(), name="agent")
        self._sweeper = asyncio.create_task(self._sweep_strays(), name="agent-stray-sweeper")

    async def stop(self) -> None:
        """Stop the agent; containers keep running and are re-adopted at the next start."""
        for task in (self._main, self._sweeper, *self._removing.values()):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.controllers.values()))
        await self.networking.close()
        self.db.close()

    async def _readopt(self) -> None:
        """Rebuild controllers from the task DB, trusting the engine for what is still running."""
        try:
            containers = {c.task_id: c for c in await self.runtime.list_containers(self.node_id)}
        except RuntimeError_ as exc:
            log.warning("cannot list containers for re-adoption: %s", exc)
            containers = {}
        for task, status in self.db.load():
            status = status or task.status
            ref = containers.get(task.id)
            if status.state == states.RUNNING and ref is None:
                status = pb.TaskStatus(
                    state=states.FAILED,
                    message="failed",
                    err="container disappeared while the agent was stopped",
                )
            self._add_controller(task, status)
        log.info("re-adopted %d tasks", len(self.controllers))

    # ------------------------------------------------------------------ session

    async def _run(self) -> None:
        backoff = 0.0
        index = 0
        #: Tries since the session was lost; the first round leaves out the manager lost.
        since_loss = 0
        self._redirected = False
        while True:
            if self._redirected:
                manager = self.managers[0]  # the leader, as the follower that sent us here said
            else:
                manager = self._manager_to_try(index, since_loss)
            self._redirected = False
            self.trace.record("try", manager)
            try:
                await self._session(manager)
            except asyncio.CancelledError:
                raise
            except SessionDeferred as exc:
                # Not a failure: the same manager, when it said (a thousand agents are told so
                # after a leader change: one line each would flood the log).
                log.debug("%s", exc)
                self.trace.record("deferred", manager, f"{exc.retry_after:.3f}")
                await asyncio.sleep(exc.retry_after)
                continue
            except RPCError as exc:
                self.trace.record("ended", manager, exc.message)
                log.warning("session with manager %s ended: %s", manager, exc.message)
            except Exception as exc:
                self.trace.record("failed", manager, f"{type(exc).__name__}: {exc}")
                log.exception("session with manager %s failed", manager)
            if self.connected.is_set():
                backoff = 0.0  # a session was open: start again from the shortest backoff
                self._lost_leader = manager
                since_loss = 0
                # Agents spread over the other managers rather than all at the same one.
                index = random.randrange(len(self.managers))
            else:
                since_loss += 1
            self.connected.clear()
            if self._redirected:  # kept until the next try, which goes to the leader
                self.trace.record("redirected", manager, self.managers[0])
                await asyncio.sleep(random.uniform(0, BACKOFF_BASE))
                continue
            index += 1
            backoff = min(BACKOFF_BASE + 2 * backoff, BACKOFF_MAX)
            wait = random.uniform(0, backoff)
            self.trace.record("backoff", manager, f"{wait:.3f}")
            await asyncio.sleep(wait)

    def _manager_to_try(self, index: int, since_loss: int) -> str:
        """The ``index``-th manager in turn. For one round after a session was lost, the
        manager lost is left out: it is most likely dead (a leader killed), each try of it
        failed at once and doubled the backoff (after a failover at 1,000 nodes some agents
        waited 3-5 s that way), and if it still leads the others send the agent back to it."""
        managers = self.managers
        if self._lost_leader and since_loss < len(managers) - 1:
            managers = [m for m in managers if m != self._lost_leader] or managers
        return managers[index % len(managers)]

    async def _session(self, manager: str) -> None:
        info = await self.runtime.describe()
        description = description_from(info, self.hostname, self.runtime_name, generic=self.generic_resources)
        description.addr = self.serve_addr
        self.description = description
        request = rpb.SessionRequest(description=description, lost_leader=self._lost_leader)
        stream = self.transport.stream(manager, rpc.SESSION, request.SerializeToString(), tls=self.tls())
        iterator = stream.__aiter__()
        workers: list[asyncio.Task[None]] = []
        # Closed on every way out, a redirect or a retry-after too (the call was left to the
        # garbage collector, while the agent opened its next one).
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
            # comes as the first message does, and an agent stopped then never stopped.
            async with asyncio.timeout(RPC_TIMEOUT):
                raw_first = await iterator.__anext__()
            first = rpb.SessionMessage.FromString(raw_first)
            session_id = first.session_id
            if not session_id and first.retry_after > 0:
                raise SessionDeferred(manager, min(first.retry_after, BACKOFF_MAX))  # a bound on any leader
            if not session_id:
                # A manager that does not lead: it only says where the managers are (leader first).
                if first.managers:
                    self._learn_managers(first.managers)
                    self._redirected = True
                raise RPCError(StatusCode.UNAVAILABLE, f"{manager} is not the leader; trying the leader")
            self._on_session_message(first)
            self._lost_leader = ""
            self.trace.record("opened", manager)
            log.info("session %s open with manager %s", session_id, manager)
            self.session_opened_at = time.time()
            self.connected.set()
            workers = [
                asyncio.create_task(self._session_updates(iterator)),
                asyncio.create_task(self._heartbeats(manager, session_id, first.heartbeat_period)),
                asyncio.create_task(self._assignments(manager, session_id)),
                asyncio.create_task(self._report_status(manager, session_id)),
            ]
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            raise RPCError(StatusCode.UNAVAILABLE, "session stream closed by the manager")
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await iterator.aclose()  # type: ignore[attr-defined]

    def _on_session_message(self, message: rpb.SessionMessage) -> None:
        self.node = message.node
        self.manager_ids = frozenset(message.manager_ids)
        self._learn_managers(message.managers)
        if self.on_node is not None and message.HasField("node"):
            self.on_node(message.node)
        # Every session message carries the whole network picture (absent: nothing to realise).
        if log.isEnabledFor(logging.DEBUG):  # what this node was told, one JSON line (tests read it)
            log.debug("network state received: %s", json.dumps(json_format.MessageToDict(message.network)))
        self.networking.submit(message.network)

    def _learn_managers(self, managers: Sequence[str]) -> None:
        """A manager listed the swarm's managers (leader first): fail over through them from
        now on, and let the daemon keep them for its next start (``on_managers``)."""
        if not managers or list(managers) == self.managers:
            return
        self.managers = list(managers)
        if self.on_managers is not None:
            self.on_managers(list(self.managers))

    async def _session_updates(self, iterator: object) -> None:
        async for raw in iterator:  # type: ignore[attr-defined]
            self._on_session_message(rpb.SessionMessage.FromString(raw))

    async def _heartbeats(self, manager: str, session_id: str, period: float) -> None:
        """A heartbeat every period the leader says. The first goes a random half to whole
        period after the open, not with it: the open counts as one (the leader gives the
        session three periods from then), and after an election a thousand agents reopening
        at once sent a thousand heartbeats with their opens, to a leader busiest then."""
        request = rpb.HeartbeatRequest(session_id=session_id).SerializeToString()
        loop = asyncio.get_running_loop()
        answered_sent_at = loop.time()  # the open counts as a heartbeat, as the leader counts it
        await asyncio.sleep(max(0.05, period * (0.5 + random.random() / 2)))
        while True:
            sent_at = loop.time()
            try:
                raw = await self.transport.call(
                    manager, rpc.HEARTBEAT, request, tls=self.tls(), timeout=RPC_TIMEOUT
                )
            except RPCError as exc:
                if exc.code not in RETRIED_CALL_FAILURES:
                    raise  # unknown session, not the leader, refused: the session is over
                self._heartbeat_timed_out(manager, exc, loop.time() - answered_sent_at, period)
                retry = min(FAILED_CALL_RETRY_SECONDS, period / 4)  # a dozen tries before the expiry
                await asyncio.sleep(max(0.05, retry - (loop.time() - sent_at)))
                continue
            answered_sent_at = sent_at
            period = rpb.HeartbeatResponse.FromString(raw).period or period
            await asyncio.sleep(max(0.05, period))

    def _heartbeat_timed_out(self, manager: str, exc: RPCError, unanswered_for: float, period: float) -> None:
        """A heartbeat that timed out keeps the session: a leader whose loop is busy answers
        late, and an agent that reopened on each time-out cost it a whole registration instead
        of one call (at 10,000 replicas on 1,000 nodes the open sessions fell from 744 to 9 in
        2 s that way). Only once no heartbeat has been answered for as long as the leader waits
        before counting the node Down is the session given up, and reopened."""
        expiry = period * NODE_EXPIRY_PERIODS
        if unanswered_for > expiry:
            raise RPCError(
                StatusCode.DEADLINE_EXCEEDED,
                f"no heartbeat answered by {manager} for {unanswered_for:.1f}s (the leader's node "
                f"expiry is {expiry:.1f}s): {exc.message}",
            )
        self.trace.record("heartbeat-timeout", manager, f"{unanswered_for:.3f}")
        log.debug("heartbeat to %s timed out, keeping the session: %s", manager, exc.message)

    # ------------------------------------------------------------------ assignments

    async def _assignments(self, manager: str, session_id: str) -> None:
        request = rpb.AssignmentsRequest(session_id=session_id).SerializeToString()
        expected = 0
        async for raw in self.transport.stream(manager, rpc.ASSIGNMENTS, request, tls=self.tls()):
            message = rpb.AssignmentsMessage.FromString(raw)
            if message.type == rpb.AssignmentsMessage.INCREMENTAL and message.applies_to != expected:
                raise RPCError(StatusCode.UNAVAILABLE, "assignment sequence gap; reopening the stream")
            expected = message.results_in
            if message.type == rpb.AssignmentsMessage.COMPLETE:
                self._report_what_the_leader_lacks(message)
            await self._apply_assignments(message)

    def _report_what_the_leader_lacks(self, complete: rpb.AssignmentsMessage) -> None:
        """After a (re)connect, queue the status of each task this agent holds that the
        leader's record (the complete set it just sent, each task with its stored status) does
        not show as the agent last saw it: updates an old leader took but never committed.
        Every held status used to be sent at each reopen: after an election, a thousand calls
        to the new leader at its busiest, to tell it nothing new. A task left out of the set is
        being removed: its status no longer matters."""
        recorded = {
            change.task.id: change.task.status
            for change in complete.changes
            if change.task.id and change.action == rpb.AssignmentChange.UPDATE
        }
        for task_id, controller in self.controllers.items():
            known, mine = recorded.get(task_id), controller.status
            if known is None:
                continue
            if (known.state, known.message, known.err) != (mine.state, mine.message, mine.err):
                self._pending.setdefault(task_id, mine)
        if self._pending:
            self._status_wakeup.set()
            self._report_by(-math.inf)

    async def _apply_assignments(self, message: rpb.AssignmentsMessage) -> None:
        complete = message.type == rpb.AssignmentsMessage.COMPLETE
        seen: set[str] = set()
        removals: list[str] = []
        if complete:
            self.files.reset()
        hold = message.report_within_ms / 1000
        for index, change in enumerate(message.changes, 1):
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # thousands of tasks: let heartbeats and status through
            if self.files.apply(change):
                continue
            task = change.task
            if change.action == rpb.AssignmentChange.REMOVE:
                removals.append(task.id)
                continue
            seen.add(task.id)
            if hold > 0:
                self._holds[task.id] = hold
            else:
                self._holds.pop(task.id, None)
            controller = self.controllers.get(task.id)
            self.db.put_task(task, within=_db_wait(hold))
            if controller is None:
                self._add_controller(task, None)
            else:
                controller.update(self._expanded(task))
        if complete:
            removals.extend(task_id for task_id in self.controllers if task_id not in seen)
        for task_id in removals:
            self._start_removal(task_id)
        if complete and not self._reconciled_once:
            self._reconciled_once = True
            await self._remove_strays()

    def _expanded(self, task: pb.Task) -> pb.Task:
        """The task as its container is built: templates in its hostname, environment and
        mounts expanded for this node (SwarmKit does it in the agent too: only the node knows
        its own ID and hostname). The manager checked them when the service was stored."""
        if not tasktemplates.uses_templates(task):
            return task  # the placeholders' values are not even worked out
        try:
            return tasktemplates.expand_task(
                task, tasktemplates.values_for(task, self.node_id, self.description)
            )
        except tasktemplates.TemplateError as exc:
            log.warning("task %s: templates left as they are: %s", task.id, exc)
            return task

    def _add_controller(self, task: pb.Task, status: pb.TaskStatus | None) -> None:
        controller = TaskController(
            self._expanded(task),
            status,
            self.runtime,
            self._queue_status,
            self.files.files_for,
            registry_auth=self.files.registry_auth_for,
            networks=self.networking,
        )
        self.controllers[task.id] = controller  # the task DB has it: the caller wrote it or read it
        if controller.status.state == states.RUNNING:
            self._running.add(task.id)
        controller.start()

    async def remove_all(self) -> None:
        """Remove every task's container (the node leaves the swarm); return once all are gone."""
        for task_id in list(self.controllers):
            self._start_removal(task_id)
        await asyncio.gather(*self._removing.values(), return_exceptions=True)

    def _start_removal(self, task_id: str) -> None:
        controller = self.controllers.pop(task_id, None)
        self._running.discard(task_id)
        self._holds.pop(task_id, None)  # a status of it still queued goes when it is due
        if controller is not None:
            self._removing[task_id] = asyncio.create_task(self._remove(task_id, controller))

    async def _remove(self, task_id: str, controller: TaskController) -> None:
        """Stop and remove the task's container (its task DB entry only then: a daemon that
        dies meanwhile re-adopts it and removes it again), then, once no other removal is
        under way, sweep for what they may have left."""
        try:
            await controller.remove()
            self.db.delete(task_id)
        finally:
            self._removing.pop(task_id, None)
            if not self._removing:
                self._sweep_wanted.set()

    async def _sweep_strays(self) -> None:
        """Sweep after removals and every ``STRAY_SWEEP_SECONDS``, once the manager's complete
        set of assignments is known (before that, every container looks like a stray). Removals
        that come one by one share a sweep per ``STRAY_SWEEP_AFTER_REMOVAL_INTERVAL``: each
        sweep lists the whole node, so one per removal made a node's removals quadratic."""
        pacer = Pacer(STRAY_SWEEP_AFTER_REMOVAL_INTERVAL)
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and this loop would then outlive ``stop``.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STRAY_SWEEP_SECONDS):
                    await self._sweep_wanted.wait()
            await pacer.pace()
            self._sweep_wanted.clear()
            if self._reconciled_once:
                await self._remove_strays()

    async def _remove_strays(self) -> None:
        """Remove the containers labelled with this node that no assignment accounts for: a
        crash between create and persist, a create still in flight or unanswered when its
        task was removed."""
        try:
            strays = [
                ref
                for ref in await self.runtime.list_containers(self.node_id)
                if ref.task_id not in self.controllers and ref.task_id not in self._removing
            ]
        except RuntimeError_ as exc:
            log.warning("could not list containers to clean strays: %s", exc)
            return
        results = await asyncio.gather(*(self._remove_stray(ref) for ref in strays), return_exceptions=True)
        for error in results:
            if isinstance(error, RuntimeError_):
                log.warning("could not clean stray containers: %s", error)
            elif isinstance(error, BaseException):
                raise error

    async def _remove_stray(self, ref: ContainerRef) -> None:
        log.info("removing stray container %s of task %s", ref.container_id[:12], ref.task_id)
        stray = pb.Task(id=ref.task_id, node_id=self.node_id, service_id=ref.service_id)
        await self.runtime.remove(stray)

    # ------------------------------------------------------------------ status

    def _queue_status(self, task: pb.Task, status: pb.TaskStatus) -> None:
        """Queue ``status`` for the next report, and say by when that report must go: at once
        for a state the task rests at (RUNNING, an end, its desired state: the manager waits
        for it), within ``STATUS_BATCH_INTERVAL`` for a step on the way, and within the task's
        hold for any step up to RUNNING of a task its manager said nobody waits for soon
        (``report_within_ms``), and for the stop of such a task told to stop (``_held``)."""
        hold = self._holds.get(task.id, 0.0) if _held(task, status) else 0.0
        self.db.put_status(task.id, status, within=_db_wait(hold))
        self._pending[task.id] = status
        if status.state == states.RUNNING and task.id in self.controllers:
            self._running.add(task.id)
        else:
            self._running.discard(task.id)
        if states.is_terminal(status.state) or (
            status.state == states.RUNNING and task.desired_state <= states.RUNNING
        ):
            self._holds.pop(task.id, None)  # on its way no longer: what comes next goes at once
        if hold > 0:
            self._report_by(time.monotonic() + hold)
        elif status.state >= states.RUNNING or status.state >= task.desired_state:
            self._report_by(-math.inf)
        else:
            self._report_by(time.monotonic() + STATUS_BATCH_INTERVAL)
        self._status_wakeup.set()

    def _report_by(self, due: float) -> None:
        """The queued statuses must go by ``due`` (``time.monotonic``; -inf: at once)."""
        if due < self._report_due:
            self._report_due = due
            self._report_sooner.set()

    async def _report_status(self, manager: str, session_id: str) -> None:
        """Send the queued status updates in one call: at once after a quiet spell (up to
        STATUS_BATCH_BURST calls in a row), one call per STATUS_BATCH_INTERVAL in a sustained
        stream (every update still goes). A call that timed out keeps the session: its updates
        go again with the next call, ahead of those queued meanwhile (a newer status of the
        same task replaces the one that timed out).

        Only a status a task rests at (RUNNING, an end, or its desired state) takes the burst:
        the steps on the way (accepted, preparing, ready, starting) wait up to an interval for
        one, and mostly go with it. Each step used to take its own call as it happened: five
        calls for the ten tasks a node of a big service gets (preparing, starting, running,
        twice, through an engine gate of eight), each a gRPC call on both sides.

        The statuses of tasks whose manager said nobody waits for them soon (their assignment's
        ``report_within_ms``: a big service far from running) wait up to that hold, RUNNING too,
        and go with any call that goes earlier: while a node's tasks come one by one (100,000
        replicas on 1,000 nodes: one per node every 0.6-0.9 s), each RUNNING was a call of its
        own, and a hold of 1 s cut the calls per task from 1 to 0.15. The same goes for the
        SHUTDOWN of tasks being removed while their service has many left to stop (``service
        rm`` of 100,000 replicas was one call per task). The agent never holds a
        report on its own: holding every one 1 s made a rolling update, which waits for each
        slot's report before the next slot, 5.7 times as long (1.35 -> 7.65 s in process), and
        the manager gives such tasks no hold."""
        pacer = Pacer(STATUS_BATCH_INTERVAL, burst=STATUS_BATCH_BURST)
        loop = asyncio.get_running_loop()
        while True:
            await self._status_wakeup.wait()
            while True:
                self._report_sooner.clear()
                wait = self._report_due - time.monotonic()
                if wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait if math.isfinite(wait) else None):
                        await self._report_sooner.wait()
            await pacer.pace()
            self._status_wakeup.clear()
            self._report_due = math.inf
            pending, self._pending = self._pending, {}
            if not pending:
                continue
            self.db.flush()  # on disk before the manager hears of it (one transaction for all)
            request = rpb.UpdateTaskStatusRequest(session_id=session_id)
            for task_id, status in pending.items():
                request.updates.add(task_id=task_id, status=status)
            sent_at = loop.time()
            try:
                await self.transport.call(
                    manager,
                    rpc.UPDATE_TASK_STATUS,
                    request.SerializeToString(),
                    tls=self.tls(),
                    timeout=RPC_TIMEOUT,
                )
            except BaseException as exc:
                self._pending = {**pending, **self._pending}
                self._status_wakeup.set()
                self._report_by(-math.inf)
                if isinstance(exc, RPCError) and exc.code in RETRIED_CALL_FAILURES:
                    self.trace.record("status-timeout", manager, str(len(pending)))
                    log.debug("status report to %s timed out, sending it again: %s", manager, exc.message)
                    await asyncio.sleep(max(0.0, FAILED_CALL_RETRY_SECONDS - (loop.time() - sent_at)))
                    continue
                raise
