"""How the agent comes back to its managers (issue 18), against a scripted transport.

After a leader change every agent reopens its session. Its backoff starts again from the
shortest once a session had been open (it grew while the managers were unreachable before, and
was never reset, so after a few leader changes an agent waited up to 8 s), and a leader that
turns the open away with a retry-after gets the same open back from the agent after that
delay, not another manager at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from shoal import rpc, states
from shoal.agent import agent as agent_module
from shoal.agent.agent import Agent
from shoal.manager.dispatcher import GRACE_MULTIPLIER
from shoal.proto import objects_pb2 as pb
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.runtime import ContainerRef, EngineInfo
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial

DEADLINE = 10.0
RETRY_AFTER = 0.05


class Engine:
    """Just what the agent asks of its engine when it has no task."""

    async def describe(self) -> EngineInfo:
        return EngineInfo("node", "linux", "x86_64", 1_000_000_000, 1 << 30, "0")

    async def list_containers(self, node_id: str) -> list[ContainerRef]:
        return []


class ScriptedManagers:
    """Answers each session open with the next step of ``script``: ``refuse`` (unreachable),
    ``lose`` (a session that opens, then its leader is gone), ``busy`` (turned away with a
    retry-after) or ``open`` (a session that stays)."""

    def __init__(self, script: list[str], retry_after: float = RETRY_AFTER) -> None:
        self.script = list(script)
        self.retry_after = retry_after
        self.opens: list[tuple[str, float]] = []
        self.done = asyncio.Event()
        #: Every method called, in order.
        self.methods: list[str] = []

    def stream(self, target: str, method: str, request: bytes, **kwargs: object) -> AsyncIterator[bytes]:
        self.methods.append(method)
        if method != rpc.SESSION:
            return self._forever()
        self.opens.append((target, asyncio.get_running_loop().time()))
        return self._session(self.script.pop(0) if self.script else "open")

    async def _session(self, step: str) -> AsyncIterator[bytes]:
        if step == "refuse":
            raise RPCError(StatusCode.UNAVAILABLE, f"cannot reach the manager ({step})")
        if step == "busy":
            yield rpb.SessionMessage(retry_after=self.retry_after).SerializeToString()
            return
        yield rpb.SessionMessage(session_id=f"s{len(self.opens)}", heartbeat_period=60).SerializeToString()
        if step == "lose":
            raise RPCError(StatusCode.UNAVAILABLE, "the leader is gone")
        self.done.set()
        await asyncio.Event().wait()

    async def _forever(self) -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""  # pragma: no cover  (makes this an async generator)

    async def call(self, target: str, method: str, request: bytes, **kwargs: object) -> bytes:
        self.methods.append(method)
        if method == rpc.HEARTBEAT:
            return rpb.HeartbeatResponse(period=60).SerializeToString()
        return b""


def scripted_agent(tmp_path: Path, managers: ScriptedManagers, addresses: list[str]) -> Agent:
    """An agent of node n1 on the fake engine whose every session open goes to ``managers``."""
    return Agent(
        node_id="n1",
        state_dir=tmp_path,
        runtime=Engine(),  # type: ignore[arg-type]
        runtime_name="fake",
        transport=managers,  # type: ignore[arg-type]
        tls=lambda: TLSMaterial(b"", b"", b""),
        managers=addresses,
    )


async def run_until_open(agent: Agent, managers: ScriptedManagers) -> None:
    """Start ``agent``, wait for a session that stays open, stop it."""
    await agent.start()
    try:
        await asyncio.wait_for(managers.done.wait(), DEADLINE)
    finally:
        await agent.stop()


async def test_backoff_starts_again_after_a_session_and_a_retry_after_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backoffs: list[float] = []

    def no_wait(low: float, high: float) -> float:
        backoffs.append(high)  # the longest the agent would wait
        return 0.0

    monkeypatch.setattr(agent_module.random, "uniform", no_wait)
    managers = ScriptedManagers(["refuse", "refuse", "refuse", "lose", "busy", "open"])
    agent = scripted_agent(tmp_path, managers, ["m1:2377", "m2:2377"])
    await run_until_open(agent, managers)
    # Three refusals grew the backoff (100 ms, 300 ms, 700 ms); the lost session reset it.
    assert backoffs == pytest.approx([0.1, 0.3, 0.7, 0.1]), backoffs
    targets = [target for target, _ in managers.opens]
    # Each failure moves on to the other manager; the turned-away open goes back to the same one.
    assert targets == ["m1:2377", "m2:2377", "m1:2377", "m2:2377", "m1:2377", "m1:2377"], targets
    (_, busy_at), (_, again_at) = managers.opens[-2:]
    assert again_at - busy_at >= RETRY_AFTER


async def test_a_retry_after_is_bounded_by_the_longest_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a manager says (a bug, a bad clock), an agent never stays away longer than its
    longest backoff."""
    monkeypatch.setattr(agent_module, "BACKOFF_MAX", 0.05)
    managers = ScriptedManagers(["busy", "open"], retry_after=3600.0)
    agent = scripted_agent(tmp_path, managers, ["m1:2377"])
    await run_until_open(agent, managers)


async def test_the_session_trace_tells_where_a_reconnect_spent_its_time(tmp_path: Path) -> None:
    """After a failover, "every session back" is the last of a thousand reconnects: each agent
    keeps its steps (which manager it tried, what it was told, when a session opened), with
    times, for ``shoal hollow`` to write out and a benchmark to add up."""
    managers = ScriptedManagers(["refuse", "lose", "busy", "open"])
    agent = scripted_agent(tmp_path, managers, ["m1:2377", "m2:2377"])
    await run_until_open(agent, managers)
    rows = agent.trace.as_rows()
    steps = [(event, manager) for _, event, manager, _ in rows]
    assert steps == [
        ("try", "m1:2377"),
        ("ended", "m1:2377"),  # unreachable
        ("backoff", "m1:2377"),
        ("try", "m2:2377"),
        ("opened", "m2:2377"),
        ("ended", "m2:2377"),  # its leader gone
        ("backoff", "m2:2377"),
        ("try", "m1:2377"),
        ("deferred", "m1:2377"),  # told to come back
        ("try", "m1:2377"),
        ("opened", "m1:2377"),
    ], steps
    deferred = next(detail for _, event, _, detail in rows if event == "deferred")
    assert float(deferred) == pytest.approx(RETRY_AFTER)
    times = [at for at, _, _, _ in rows]
    assert times == sorted(times)


async def test_the_manager_whose_session_was_lost_is_left_out_for_a_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader is killed: its address refuses at once, and each refusal doubled the backoff
    (after a failover at 1,000 nodes some agents came back 3-5 s late that way). For one round
    after the loss the agent tries the other managers only; then it tries every one again (the
    lost one may be back, and alone)."""
    monkeypatch.setattr(agent_module.random, "uniform", lambda low, high: 0.0)
    # Where an agent starts in the list after a loss is random (spreading the herd): here the
    # start from which a plain rotation reaches the lost manager second.
    monkeypatch.setattr(agent_module.random, "randrange", lambda stop: 1)
    managers = ScriptedManagers(["lose", *["refuse"] * 5, "open"])
    agent = scripted_agent(tmp_path, managers, ["m1:2377", "m2:2377", "m3:2377"])
    await run_until_open(agent, managers)
    targets = [target for target, _ in managers.opens]
    assert targets[0] == "m1:2377"
    assert "m1:2377" not in targets[1:3], targets  # the round after the loss: the others only
    assert sorted(targets[1:3]) == ["m2:2377", "m3:2377"], targets
    assert sorted(targets[3:6]) == ["m1:2377", "m2:2377", "m3:2377"], targets  # then every one again


async def test_the_first_heartbeat_does_not_go_with_the_open(tmp_path: Path) -> None:
    """The open counts as a heartbeat (the leader gives the session three periods from it). A
    heartbeat sent with it doubled the calls a new leader gets from a thousand reopening agents
    at its busiest; the first goes half a period to a period later."""
    managers = ScriptedManagers(["open"])
    agent = scripted_agent(tmp_path, managers, ["m1:2377"])
    await agent.start()
    try:
        await asyncio.wait_for(managers.done.wait(), DEADLINE)
        for _ in range(100):  # the session's workers start in turn: up to its assignments stream
            if rpc.ASSIGNMENTS in managers.methods:
                break
            await asyncio.sleep(0)
        assert rpc.ASSIGNMENTS in managers.methods, managers.methods
        assert rpc.HEARTBEAT not in managers.methods, managers.methods
    finally:
        await agent.stop()


# ---------------------------------------------------------------- calls that time out
#
# A leader whose loop is busy answers late: at 10,000 replicas on 1,000 nodes hundreds of
# heartbeats and status reports passed the agents' deadline, and each agent whose call timed
# out dropped its whole session and reopened it (the open sessions fell from 744 to 9 in 2 s),
# which cost the leader a registration for every missed call. A time-out now keeps the session.

TIMED_OUT = RPCError(StatusCode.DEADLINE_EXCEEDED, "timed out after 5.0s")
#: What grpc.aio gave ~1,500 heartbeats and status reports of a 10,000-replica run on 1,000
#: hollow nodes while the leader was busy (the peer ended the call without an answer).
DROPPED = RPCError(StatusCode.CANCELLED, "CANCELLED")
#: Heartbeat periods to expiry in the tests that are not about it.
LONG_EXPIRY = 1000


class SlowLeader(ScriptedManagers):
    """A leader that answers each heartbeat and status report with the next outcome of its
    script (``timeout``, ``dropped``: CANCELLED by the peer, ``ok`` or ``unknown``: the session
    is not known; ``ok`` once a script is spent), with a short heartbeat period, and keeps the updates it received."""

    def __init__(
        self,
        period: float,
        heartbeats: list[str] | None = None,
        statuses: list[str] | None = None,
        sessions: list[str] | None = None,
    ) -> None:
        super().__init__(sessions or [])
        self.period = period
        self.outcomes = {rpc.HEARTBEAT: list(heartbeats or []), rpc.UPDATE_TASK_STATUS: list(statuses or [])}
        self.heartbeats_answered = 0
        self.received: list[str] = []
        #: Called during a status report that is going to time out.
        self.while_timing_out: Callable[[], None] = lambda: None
        #: Set: the current session's stream ends.
        self.end_session = asyncio.Event()

    async def _session(self, step: str) -> AsyncIterator[bytes]:
        yield rpb.SessionMessage(
            session_id=f"s{len(self.opens)}", heartbeat_period=self.period
        ).SerializeToString()
        if step == "lose-later":
            await self.end_session.wait()
            raise RPCError(StatusCode.UNAVAILABLE, "the leader is gone")
        await asyncio.Event().wait()

    async def call(self, target: str, method: str, request: bytes, **kwargs: object) -> bytes:
        self.methods.append(method)
        script = self.outcomes.get(method, [])
        outcome = script.pop(0) if script else "ok"
        if outcome in ("timeout", "dropped"):
            if method == rpc.UPDATE_TASK_STATUS:
                self.while_timing_out()
            raise TIMED_OUT if outcome == "timeout" else DROPPED
        if outcome == "unknown":
            raise RPCError(StatusCode.NOT_FOUND, "session invalid: open a new session")
        if method == rpc.HEARTBEAT:
            self.heartbeats_answered += 1
            return rpb.HeartbeatResponse(period=self.period).SerializeToString()
        if method == rpc.UPDATE_TASK_STATUS:
            self.received += [u.task_id for u in rpb.UpdateTaskStatusRequest.FromString(request).updates]
        return b""


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (the agent's workers run on this loop), failing at DEADLINE."""
    async with asyncio.timeout(DEADLINE):
        while not condition():  # noqa: ASYNC110  (what it waits for changes in fakes with no event)
            await asyncio.sleep(0.01)


def events(agent: Agent) -> list[str]:
    return [event for _, event, _, _ in agent.trace.as_rows()]


def endings(agent: Agent) -> list[str]:
    """Why each of the agent's sessions ended, as its trace says."""
    return [detail for _, event, _, detail in agent.trace.as_rows() if event == "ended"]


@contextlib.asynccontextmanager
async def running(tmp_path: Path, leader: SlowLeader) -> AsyncIterator[Agent]:
    """An agent of node n1 whose sessions go to ``leader``, started, stopped on the way out."""
    agent = scripted_agent(tmp_path, leader, ["m1:2377"])
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


@pytest.fixture
def long_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the tests not about the expiry: a loaded machine's lag must not reach it."""
    monkeypatch.setattr(agent_module, "NODE_EXPIRY_PERIODS", LONG_EXPIRY)


def test_the_agent_waits_as_long_as_the_leader_before_counting_its_node_down() -> None:
    assert agent_module.NODE_EXPIRY_PERIODS == GRACE_MULTIPLIER


@pytest.mark.usefixtures("long_expiry")
@pytest.mark.parametrize("failure", ["timeout", "dropped"])
async def test_a_heartbeat_that_times_out_keeps_the_session(tmp_path: Path, failure: str) -> None:
    leader = SlowLeader(period=0.2, heartbeats=[failure, "ok", "ok"])
    async with running(tmp_path, leader) as agent:
        await until(lambda: leader.heartbeats_answered >= 2)
        assert len(leader.opens) == 1, events(agent)
        assert events(agent) == ["try", "opened", "heartbeat-timeout"], events(agent)


async def test_heartbeats_unanswered_past_the_node_expiry_reopen_the_session(tmp_path: Path) -> None:
    period = 0.2
    leader = SlowLeader(period=period, heartbeats=["timeout"] * 1000)
    async with running(tmp_path, leader) as agent:
        await until(lambda: events(agent).count("opened") >= 2)
        leader.outcomes[rpc.HEARTBEAT].clear()  # the new session's heartbeats are answered
        (_, first), (_, second) = leader.opens[:2]
        assert second - first >= period * GRACE_MULTIPLIER, events(agent)
        assert events(agent).count("heartbeat-timeout") >= 2, events(agent)
        assert "no heartbeat answered" in endings(agent)[0], endings(agent)


@pytest.mark.parametrize("failure", ["timeout", "dropped"])
async def test_a_status_report_that_times_out_is_sent_again_in_order(tmp_path: Path, failure: str) -> None:
    leader = SlowLeader(period=60, statuses=[failure])
    async with running(tmp_path, leader) as agent:

        def queue(task_id: str) -> None:
            agent._queue_status(pb.Task(id=task_id), pb.TaskStatus(state=states.RUNNING))

        leader.while_timing_out = lambda: queue("t3")  # queued while the first report is under way
        await agent.connected.wait()
        queue("t1")
        queue("t2")
        await until(lambda: len(leader.received) >= 3)
        assert leader.received == ["t1", "t2", "t3"], leader.received
        assert len(leader.opens) == 1, events(agent)
        assert "status-timeout" in events(agent), events(agent)


@pytest.mark.usefixtures("long_expiry")
async def test_a_session_whose_stream_ends_is_reopened_after_a_heartbeat_time_out(tmp_path: Path) -> None:
    leader = SlowLeader(period=0.2, heartbeats=["timeout"], sessions=["lose-later", "open"])
    async with running(tmp_path, leader) as agent:
        await until(lambda: "heartbeat-timeout" in events(agent))
        assert len(leader.opens) == 1, events(agent)
        leader.end_session.set()
        await until(lambda: events(agent).count("opened") >= 2)
        assert endings(agent) == ["the leader is gone"], endings(agent)


@pytest.mark.usefixtures("long_expiry")
async def test_a_leader_that_no_longer_knows_the_session_has_it_reopened(tmp_path: Path) -> None:
    """Only a time-out is retried: "session invalid" (a new leader, a node marked Down) ends it."""
    leader = SlowLeader(period=0.2, heartbeats=["timeout", "unknown"])
    async with running(tmp_path, leader) as agent:
        await until(lambda: events(agent).count("opened") >= 2)
        assert endings(agent) == ["session invalid: open a new session"], endings(agent)
        assert events(agent).count("heartbeat-timeout") == 1, events(agent)


def failure_times(agent: Agent, event: str) -> list[float]:
    return [at for at, name, _, _ in agent.trace.as_rows() if name == event]


@pytest.mark.usefixtures("long_expiry")
async def test_a_heartbeat_dropped_at_once_is_not_tried_again_at_once(tmp_path: Path) -> None:
    """CANCELLED comes back at once from an overloaded leader: the agent tried again every 50
    ms (70 ms apart in a 100,000-replica run's traces), ~20 heartbeats a second per node at a
    leader that could not answer them. Now no sooner than a quarter period after the last."""
    period = 2.0
    leader = SlowLeader(period=period, heartbeats=["dropped"] * 1000)
    async with running(tmp_path, leader) as agent:
        await until(lambda: len(failure_times(agent, "heartbeat-timeout")) >= 3)
        times = failure_times(agent, "heartbeat-timeout")
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= period / 4 * 0.9, gaps


async def test_a_status_report_dropped_at_once_is_not_sent_again_at_once(tmp_path: Path) -> None:
    """As for heartbeats: a status report answered CANCELLED at once went again ~50-94 ms later,
    over and over; now 1 s after it was sent (``FAILED_CALL_RETRY_SECONDS``), and it still
    arrives."""
    leader = SlowLeader(period=60, statuses=["dropped", "dropped"])
    async with running(tmp_path, leader) as agent:
        await agent.connected.wait()
        agent._queue_status(pb.Task(id="t1"), pb.TaskStatus(state=states.RUNNING))
        await until(lambda: leader.received == ["t1"])
        times = failure_times(agent, "status-timeout")
    assert len(times) == 2 and times[1] - times[0] >= 0.9, times  # FAILED_CALL_RETRY_SECONDS: 1 s
