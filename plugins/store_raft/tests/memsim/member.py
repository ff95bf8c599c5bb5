"""One simulated manager: the provider with its peer network, the kernel's object store, a server.

This is the part of the manager daemon that replication goes through (see
``shoal.daemon.manager``), with nothing faked: a ``RaftStore`` on real WAL and snapshot files,
``ObjectStore`` as its state machine, its ``PeerNetwork`` carrying its bytes over a
``MemoryTransport`` whose server checks internal-CA manager certificates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from shoal.roles.transport import Handler, PeerIdentity, RPCError, StreamHandler, TLSMaterial
from shoal.store.memory import ObjectStore
from shoal_store_raft.options import RaftOptions
from shoal_store_raft.peernet import RAFT_PULL, RAFT_STEP, PeerNetwork
from shoal_store_raft.provider import PeerLink, RaftStore
from shoal_transport_memory import MemoryNetwork, MemoryServer, MemoryTransport

from memsim.checks import AppliedHistory, RecordingMachine

T = TypeVar("T")


async def _at_once(fn: Callable[[], T]) -> T:
    """The provider's snapshot writes, run on the loop 10 virtual ms after they were asked for
    (the loop runs meanwhile, as with a thread): a thread would finish at a moment no seed
    decides, and a seed must be one run."""
    await asyncio.sleep(0.01)
    return fn()


class SimMember:
    """A manager that can start, crash abruptly, restart on its directory, and be removed."""

    def __init__(
        self, name: str, root: Path, network: MemoryNetwork, tls: TLSMaterial, options: RaftOptions
    ) -> None:
        self.name = name
        self.addr = f"{name}:2377"
        self.state_dir = root / name
        self.network = network
        self.tls = tls
        self.options = options
        self.member_id = 0
        self.store: RaftStore | None = None
        self.objects: ObjectStore | None = None
        self.net: PeerNetwork | None = None
        self.transport: MemoryTransport | None = None
        self.server: MemoryServer | None = None
        self.machine: RecordingMachine | None = None
        #: The store was told it is no longer a member (the kernel would make it leave).
        self.removed = False
        #: Left the group for good (removed, or a join that never completed); never restarted.
        self.gone = False
        self.lives = 0
        #: Senders this member's PeerNetwork told they were no longer members.
        self.refusals: list[str] = []
        #: RaftStep (unary) calls this member handled: the fallback when no pull stream is open.
        self.steps_handled = 0
        #: A restart is scheduled and has not run yet.
        self.starting = False
        self.last_commit = 0

    @property
    def alive(self) -> bool:
        return self.store is not None

    async def start(
        self,
        history: AppliedHistory,
        *,
        bootstrap: bool = False,
        join: bool = False,
        rng_seed: int = 0,
    ) -> None:
        """Open (or create) the member's state and begin serving its store network."""
        self.starting = False
        await self._drop_network()  # a crash's clean-up may not have run yet
        self.lives += 1
        self.last_commit = 0
        self.network.set_down(self.addr, False)
        objects = ObjectStore()
        machine = RecordingMachine(f"{self.name}#{self.lives}", objects, history)
        transport = MemoryTransport(self.network)
        link = PeerLink(transport, lambda: self.tls, node_id=self.name, advertise_addr=self.addr)
        store = RaftStore(self.state_dir, self.options, rng_seed=rng_seed, link=link, blocking=_at_once)
        objects.provider = store
        await store.start(machine, bootstrap=bootstrap, join=join)
        net = store.net
        assert net is not None
        net.on_removed = self._on_removed
        unary, streams = store.rpc_handlers()  # what the kernel would serve, RaftHello too
        self.server = await transport.serve(
            self.addr,
            self.tls,
            {**unary, RAFT_STEP: self._step_handler(net)},
            {**streams, RAFT_PULL: self._pull_handler(net)},
        )
        self.store, self.objects, self.net, self.transport, self.machine = (
            store,
            objects,
            net,
            transport,
            machine,
        )
        self.member_id = store.member_id

    def _on_removed(self, message: str) -> None:
        self.removed = True

    def _note_refusal(self, exc: RPCError, peer: PeerIdentity | None) -> None:
        if "no longer a member" in exc.message:
            caller = peer.node_id if peer is not None else "?"
            self.refusals.append(f"{self.name} refused {caller} as not a member")

    def _step_handler(self, net: PeerNetwork) -> Handler:
        """``net.handle_step``, noting each sender it tells it is no longer a member."""

        async def handle(request: bytes, peer: PeerIdentity | None) -> bytes:
            self.steps_handled += 1
            try:
                return await net.handle_step(request, peer)
            except RPCError as exc:
                self._note_refusal(exc, peer)
                raise

        return handle

    def _pull_handler(self, net: PeerNetwork) -> StreamHandler:
        """``net.handle_pull``, noting each puller it tells it is no longer a member."""

        async def handle(request: bytes, peer: PeerIdentity | None) -> AsyncIterator[bytes]:
            try:
                async for message in net.handle_pull(request, peer):
                    yield message
            except RPCError as exc:
                self._note_refusal(exc, peer)
                raise

        return handle

    def kill(self) -> None:
        """Die between two event-loop callbacks: nothing more runs, files stay as written.

        Every WAL write is an ``os.write`` made inside the loop callback that processes a Ready,
        so a crash here keeps what the OS has (a crash losing unsynced writes is the core
        simulation's and ``test_raft_crash.py``'s job). The provider has no "die now" API:
        closing it would flush and acknowledge, so its ticker and files are stopped directly.
        """
        store = self.store
        if store is None:
            return
        self.network.set_down(self.addr, True)  # cuts its calls in flight both ways
        store._closed = True
        if store._ticker is not None:
            store._ticker.cancel()
        for task in (store._snapshotting, store._installing):  # what runs in steps dies too
            if task is not None:
                task.cancel()
        if store._wal is not None:
            store._wal.close()
        self.store = self.objects = self.machine = None

    async def crash(self) -> None:
        """``kill``, then let go of its network (the sender tasks, the server, the client)."""
        self.kill()
        await self._drop_network()

    async def stop(self) -> None:
        """A clean shutdown (the daemon's path)."""
        if self.store is None:
            return
        await self.store.stop()
        self.network.set_down(self.addr, True)
        await self._drop_network()

    async def _drop_network(self) -> None:
        net, server, transport = self.net, self.server, self.transport
        self.store = self.objects = self.net = self.machine = None
        self.server = self.transport = None
        if net is not None:
            await net.close()
        if server is not None:
            await server.stop(0)
        if transport is not None:
            await transport.close()
        await asyncio.sleep(0)
