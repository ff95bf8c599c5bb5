"""A seeded whole-cluster simulation: real providers, real files, the kernel's network code.

One ``random.Random(seed)`` decides every client action and fault; the ``MemoryNetwork`` and
each provider get seeds drawn from it, and everything runs on a ``VirtualTimeLoop`` (checking
the invariants after every loop iteration), so one seed is one run. The phases:

1. bootstrap the first member, join the others through ``add_member(node_id, addr)`` as the
   kernel does for ``swarm join`` (the leader asks the new member for its ID with ``RaftHello``,
   adds it as a learner that catches up, then as a voter). No member is told another's address:
   each learns them from the member books the members pass each other;
2. chaos: clients write and read, while the rng loses, duplicates and delays messages,
   partitions and heals, crashes members (abruptly) and restarts them on their directories,
   adds and removes members and hands leadership over;
3. quiesce: faults off, crashed members back, then every member of the final group must reach
   the leader's commit index with the same state, and the client history must be linearizable.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftsim.linearizability import INFINITY, Op, check_history
from shoal.roles import StoreUnavailable
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.raft import Role
from shoal_transport_memory import MemoryNetwork, VirtualTimeLoop

from memsim.checks import AppliedHistory, Violation, kv_of_store
from memsim.clients import KEYS, parse, put, read_and_probe
from memsim.member import SimMember
from memsim.pki import material
from memsim.vclock import simulated_clock_and_ids

#: Where state directories go: tmpfs when there is one, so thousands of fsyncs cost nothing
#: (the WAL's durability under power loss is tested elsewhere, not here).
STATE_ROOT = "/dev/shm" if Path("/dev/shm").is_dir() else None


@dataclass
class MemSimConfig:
    members: int = 3
    #: Virtual seconds of chaos; then the cluster must settle within ``settle_seconds``.
    seconds: float = 10.0
    settle_seconds: float = 60.0
    step: tuple[float, float] = (0.05, 0.3)
    p_write: float = 0.35
    p_read: float = 0.25
    p_crash: float = 0.03
    p_restart: float = 0.2
    p_partition: float = 0.04
    p_heal: float = 0.12
    p_faults: float = 0.05
    p_add: float = 0.03
    p_remove: float = 0.025
    p_transfer: float = 0.03
    extra_members: int = 2
    op_timeout: float = 4.0
    max_ops_per_key: int = 12
    options: RaftOptions = field(
        default_factory=lambda: RaftOptions(
            snapshot_interval=16, tick_ms=50, election_ticks=10, heartbeat_ticks=1, catch_up_seconds=4
        )
    )


class CheckedLoop(VirtualTimeLoop):
    """A virtual-time loop that runs the simulation's invariant checks after every iteration."""

    after_step: Callable[[], None] | None = None
    failure: BaseException | None = None

    def _run_once(self) -> None:
        super()._run_once()  # type: ignore[misc]
        if self.after_step is not None and self.failure is None:
            try:
                self.after_step()
            except Violation as exc:
                self.failure = exc
                self.stop()


class MemSimulation:
    def __init__(self, seed: int, cfg: MemSimConfig | None = None) -> None:
        self.seed = seed
        self.cfg = cfg or MemSimConfig(members=3 if seed % 2 == 0 else 5)
        self.rng = random.Random(seed)
        self.network = MemoryNetwork(seed=self.rng.getrandbits(32))
        self.history = AppliedHistory()
        self.members: dict[str, SimMember] = {}
        self.leader_of_term: dict[int, int] = {}
        self.ops: list[Op] = []
        self.tx_ops: list[Op] = []
        self.ops_per_key: dict[str, int] = {}
        self.clients: dict[asyncio.Task[None], tuple[Op, Op | None, SimMember]] = {}
        self.admin: asyncio.Task[None] | None = None
        self.stamp = 0
        self.next_value = 1
        self.log: list[str] = []
        self.root: Path | None = None
        self.ids_rng = random.Random(self.rng.getrandbits(32))

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        loop = CheckedLoop()
        loop.after_step = self.check_step
        with tempfile.TemporaryDirectory(prefix="memsim-", dir=STATE_ROOT) as tmp:
            self.root = Path(tmp)
            with simulated_clock_and_ids(loop, self.ids_rng):
                main = loop.create_task(self._main())
                try:
                    loop.run_until_complete(main)
                except RuntimeError:
                    if loop.failure is None:
                        raise  # the loop is stopped early only by a violation
                finally:
                    loop.after_step = None
                    main.cancel()
                    for task in asyncio.all_tasks(loop):
                        task.cancel()
                    loop.run_until_complete(_drain(loop))
                    loop.close()
        if loop.failure is not None:
            raise loop.failure

    async def _main(self) -> None:
        try:
            await self._form_cluster()
            loop = asyncio.get_running_loop()
            end = loop.time() + self.cfg.seconds
            while loop.time() < end:
                await asyncio.sleep(self.rng.uniform(*self.cfg.step))
                self._chaos_step()
            await self._settle()
        finally:
            await self._shutdown()
        ok, why = check_history(self.ops)
        if not ok:
            raise Violation(why)

    async def _shutdown(self) -> None:
        for task in list(self.clients) + ([self.admin] if self.admin else []):
            task.cancel()
        for m in self.members.values():
            await m.crash()

    def note(self, what: str) -> None:
        self.log.append(f"t={asyncio.get_running_loop().time():.3f} {what}")

    # ------------------------------------------------------------------ invariants

    def check_step(self) -> None:
        """After every loop iteration: one leader per term, commit indexes never go back, and
        nothing went wrong in a member's state machine or provider."""
        if self.history.violation is not None:
            raise self.history.violation
        for m in self.members.values():
            store = m.store
            core = store._core if store is not None else None
            if store is None or core is None:
                continue
            failed = store._failed
            if failed is not None:
                raise Violation(f"{m.name}: the provider stopped after a fatal error: {failed!r}")
            if core.role == Role.LEADER:
                other = self.leader_of_term.setdefault(core.term, core.id)
                if other != core.id:
                    raise Violation(f"two leaders in term {core.term}: {other:x} and {core.id:x} ({m.name})")
            if core.commit < m.last_commit:
                raise Violation(f"{m.name}: commit index went back from {m.last_commit} to {core.commit}")
            m.last_commit = core.commit

    # ------------------------------------------------------------------ membership

    def live(self) -> list[SimMember]:
        return [m for m in self.members.values() if m.alive and not m.gone]

    def leader(self) -> SimMember | None:
        leaders = [m for m in self.live() if m.store is not None and m.store.is_leader()]
        return leaders[-1] if leaders else None

    async def _new_member(self, *, bootstrap: bool) -> SimMember:
        assert self.root is not None
        name = f"m{len(self.members) + 1}"
        m = SimMember(name, self.root, self.network, await material(name), self.cfg.options)
        self.members[name] = m
        await m.start(
            self.history,
            bootstrap=bootstrap,
            join=not bootstrap,
            rng_seed=self.rng.getrandbits(32),
        )
        self.note(f"start {name} ({m.member_id:x}) {'bootstrap' if bootstrap else 'join'}")
        return m

    def describe(self) -> str:
        """Each member's view, for a failure message: role, term, commit, applied, voters."""
        parts = []
        for m in self.members.values():
            if m.store is None:
                parts.append(f"{m.name}: {'gone' if m.gone else 'down'}")
                continue
            st = m.store.status()
            voters = ",".join(str(v)[:4] for v in st["members"])  # type: ignore[attr-defined]
            learners = ",".join(str(v)[:4] for v in st["learners"])  # type: ignore[attr-defined]
            if m.net is not None:
                for pid, peer in m.net._peers.items():
                    parts.append(
                        f"<{m.name}->{pid:x} q={len(peer.queue)} done={peer.task.done() if peer.task else None} "
                        f"outlet={len(peer.outlet.batches) if peer.outlet else None} "
                        f"pulling={peer.puller is not None} addr={m.net.book.address(pid)}>"
                    )
            core = m.store._core
            if core is not None:
                parts.append(
                    f"({m.name} offset {core._offset} snap {core._snapshot is not None} last {core.last_index()} pending {core._pending_snapshot is not None} recv {core._snap_recv is not None})"
                )
            if core is not None and core.is_leader():
                for peer in list(core.voters) + list(core.learners):
                    pr = core.progress(peer)
                    if pr is not None:
                        parts.append(
                            f"[{m.name} sees {peer:x}: state {pr.state.name} match {pr.match} next {pr.next} "
                            f"active {pr.recent_active} snap_sent {pr.snap_sent} acked {pr.snap_acked}]"
                        )
            parts.append(
                f"{m.name}={str(st['raft_id'])[:4]}: {st['role']} term {st['term']} commit {st['commit_index']} "
                f"applied {st['applied_index']} voters [{voters}] learners [{learners}]"
                + (" told-removed" if m.removed else "")
            )
        return "; ".join(parts)

    async def _wait(self, condition: Callable[[], bool], seconds: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not condition():
            if loop.time() > deadline:
                raise Violation(f"{what} within {seconds} virtual seconds: {self.describe()}")
            await asyncio.sleep(0.05)

    async def _form_cluster(self) -> None:
        await self._new_member(bootstrap=True)
        await self._wait(lambda: self.leader() is not None, 5, "the bootstrapped member did not lead")
        for _ in range(self.cfg.members - 1):
            m = await self._new_member(bootstrap=False)
            leader = self.leader()
            assert leader is not None and leader.store is not None
            await leader.store.add_member(m.name, m.addr)

    async def _add(self) -> None:
        """Add a new member, or finish promoting a learner whose earlier add timed out."""
        leader = self.leader()
        if leader is None or leader.store is None:
            return
        learners = [self._by_id(i.member_id) for i in leader.store.raft_members() if not i.voter]
        m = next((x for x in learners if x is not None and x.alive), None)
        if m is None:
            if len(self.members) >= self.cfg.members + self.cfg.extra_members:
                return
            m = await self._new_member(bootstrap=False)
        self.note(f"add {m.name} via {leader.name}")
        await leader.store.add_member(m.name, m.addr)
        self.note(f"added {m.name}")

    async def _remove(self, victim: SimMember) -> None:
        leader = self.leader()
        if leader is None or leader.store is None:
            return
        self.note(f"remove {victim.name} via {leader.name}")
        await leader.store.remove_raft_member(victim.member_id)
        self.note(f"removed {victim.name}")
        victim.gone = True
        await victim.stop()

    async def _transfer(self, target: int) -> None:
        leader = self.leader()
        if leader is None or leader.store is None:
            return
        self.note(f"transfer from {leader.name} to {target:x}")
        got = await leader.store.transfer_to(target, timeout=2.0)
        self.note(f"transferred to {got:x}")

    def _admin(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one membership or leadership operation at a time, as an operator would."""
        if self.admin is not None and not self.admin.done():
            return

        async def guarded() -> None:
            try:
                async with asyncio.timeout(20):
                    await make()
            except (StoreUnavailable, TimeoutError) as exc:
                self.note(f"admin failed: {exc}")

        self.admin = asyncio.get_running_loop().create_task(guarded())

    # ------------------------------------------------------------------ chaos

    def _chaos_step(self) -> None:
        rng, cfg = self.rng, self.cfg
        for m in self.members.values():
            while m.refusals:
                self.note(m.refusals.pop(0))
            if m.removed and m.alive:
                self.note(f"{m.name} was told it is no longer a member; it leaves")
                m.gone = True  # the kernel would make it leave; it must not come back
                self._crash(m)
        if rng.random() < cfg.p_write:
            self._client("w")
        if rng.random() < cfg.p_read:
            self._client("r")
        live = self.live()
        down = [m for m in self.members.values() if not m.alive and not m.gone and not m.starting]
        r = rng.random()
        if r < cfg.p_crash and live:
            self._crash(rng.choice(live))
        elif r < cfg.p_crash + cfg.p_restart and down:
            self._restart(rng.choice(down))
        r = rng.random()
        if r < cfg.p_partition:
            addrs = sorted(m.addr for m in self.members.values() if not m.gone)
            rng.shuffle(addrs)
            cut = rng.randint(1, max(1, len(addrs) // 2))
            self.network.partition(addrs[:cut], addrs[cut:])
            self.note(f"partition {sorted(addrs[:cut])}")
        elif r < cfg.p_partition + cfg.p_heal:
            self.network.heal()
        if rng.random() < cfg.p_faults:
            self.network.drop_rate = rng.choice((0.0, 0.005, 0.02, 0.05))
            self.network.duplicate_rate = rng.choice((0.0, 0.03, 0.1))
            self.network.delay = rng.choice(((0.0, 0.0), (0.0, 0.01), (0.001, 0.05)))
            self.note(
                f"faults drop={self.network.drop_rate} dup={self.network.duplicate_rate} "
                f"delay={self.network.delay}"
            )
        r = rng.random()
        leader = self.leader()
        if leader is None or leader.store is None:
            return
        voters = [i.member_id for i in leader.store.raft_members() if i.voter]
        if r < cfg.p_add:
            self._admin(self._add)
        elif r < cfg.p_add + cfg.p_remove and len(voters) >= 3:
            victim = self._by_id(rng.choice(voters))
            if victim is not None:
                self._admin(lambda: self._remove(victim))
        elif r < cfg.p_add + cfg.p_remove + cfg.p_transfer and len(voters) >= 2:
            target = rng.choice([v for v in voters if v != leader.member_id] + [0])
            self._admin(lambda: self._transfer(target))

    def _by_id(self, member_id: int) -> SimMember | None:
        for m in self.members.values():
            if m.member_id == member_id:
                return m
        return None

    def _crash(self, m: SimMember) -> None:
        self.note(f"crash {m.name}")
        for task, (_op, _tx_op, at) in list(self.clients.items()):
            if at is m:
                task.cancel()
        m.kill()
        asyncio.get_running_loop().create_task(m.crash())

    def _restart(self, m: SimMember) -> None:
        self.note(f"restart {m.name}")

        async def restart() -> None:
            await m.start(self.history, rng_seed=self.rng.getrandbits(32))

        if not m.alive and not m.starting:
            m.starting = True
            asyncio.get_running_loop().create_task(restart())

    # ------------------------------------------------------------------ clients

    def _tick(self) -> int:
        self.stamp += 1
        return self.stamp

    def _client(self, kind: str) -> None:
        keys = [k for k in KEYS if self.ops_per_key.get(k, 0) < self.cfg.max_ops_per_key]
        live = [m for m in self.live() if m.objects is not None]
        if not keys or not live:
            return
        key = self.rng.choice(keys)
        leader = self.leader()
        m = leader if leader is not None and self.rng.random() < 0.85 else self.rng.choice(live)
        self.ops_per_key[key] = self.ops_per_key.get(key, 0) + 1
        op = Op(len(self.ops) + 1, kind, key, None, self._tick())
        tx_op = None
        if kind == "w":
            op.value = self.next_value
            self.next_value += 1
        else:
            tx_op = Op(op.id, "r", key, None, op.invoke)
        self.ops.append(op)
        task = asyncio.get_running_loop().create_task(self._run_op(op, tx_op, m))
        self.clients[task] = (op, tx_op, m)
        task.add_done_callback(self._client_done)

    def _client_done(self, task: asyncio.Task[None]) -> None:
        op, _tx_op, _ = self.clients.pop(task)
        if op.status == "pending":  # cancelled by a crash of the member it talked to
            self._finish(op, "unknown" if op.kind == "w" else "fail")

    def _finish(self, op: Op, status: str) -> None:
        op.status = status
        if status == "ok":
            op.complete = self._tick()
        else:
            op.complete = INFINITY
            if status == "fail":
                self.ops_per_key[op.key] -= 1  # left out of the check: costs no search time

    async def _run_op(self, op: Op, tx_op: Op | None, m: SimMember) -> None:
        objects = m.objects
        assert objects is not None
        try:
            async with asyncio.timeout(self.cfg.op_timeout):
                if op.kind == "w":
                    value = op.value
                    assert value is not None
                    await objects.update(lambda tx: put(tx, op.key, value))
                else:
                    seen = await objects.update(lambda tx: read_and_probe(tx, op.key, op.id))
                    op.value = parse(objects.view.services.get(op.key))
                    if tx_op is not None:
                        tx_op.value = seen
        except StoreUnavailable as exc:
            refused = str(exc).startswith("this node is not the leader")
            self._finish(op, "fail" if refused or op.kind == "r" else "unknown")
            return
        except TimeoutError:
            self._finish(op, "unknown" if op.kind == "w" else "fail")
            return
        self._finish(op, "ok")
        if tx_op is not None:
            tx_op.status, tx_op.complete = "ok", op.complete
            self.tx_ops.append(tx_op)

    # ------------------------------------------------------------------ settling

    async def _settle(self) -> None:
        self.note("settle")
        self.network.reset()
        if self.admin is not None:
            await asyncio.wait([self.admin])
        for m in self.members.values():
            if m.removed:
                m.gone = True
            if m.gone and m.alive:
                await m.stop()
        for m in self.members.values():
            if not m.alive and not m.gone:
                await m.start(self.history, rng_seed=self.rng.getrandbits(32))
        if self.clients:
            await asyncio.wait(list(self.clients))
        await self._wait(
            lambda: self.leader() is not None, self.cfg.settle_seconds, "no leader after healing"
        )
        await self._wait(self._converged, self.cfg.settle_seconds, "the members did not converge")
        # The group still serves a write after all that.
        self._client("w")
        if self.clients:
            await asyncio.wait(list(self.clients))
        await self._wait(self._converged, self.cfg.settle_seconds, "the members did not converge")

    def _converged(self) -> bool:
        leader = self.leader()
        if leader is None or leader.store is None or leader.objects is None:
            return False
        group = {i.member_id for i in leader.store.raft_members()}
        status = leader.store.status()
        commit = status["commit_index"]
        if status["applied_index"] != commit:
            return False
        want = kv_of_store(leader.objects)
        for m in self.members.values():
            if m.member_id not in group:
                continue
            if m.store is None or m.objects is None:
                return False
            if m.store.status()["applied_index"] != commit or kv_of_store(m.objects) != want:
                return False
        return True


async def _drain(loop: asyncio.AbstractEventLoop) -> None:
    """Let cancelled tasks finish (a violation stops the loop with tasks in flight)."""
    me = asyncio.current_task()
    await asyncio.gather(*(t for t in asyncio.all_tasks(loop) if t is not me), return_exceptions=True)


def run_seed(seed: int, cfg: MemSimConfig | None = None) -> MemSimulation:
    """Run one seed: 3 members for even seeds, 5 for odd ones (so the number alone replays it)."""
    sim = MemSimulation(seed, cfg)
    sim.run()
    return sim
