"""Several managers on one etcd store (real etcd, mutual TLS): joining, replication, leader
failover through the lease, removal, the fast "no leader" when etcd loses its quorum, and
snapshots with compaction of etcd's history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from shoal.roles.store import MemberRemoved, NotLeaderError, StoreUnavailable
from shoal.testing.store import RecordingMachine
from shoal_store_etcd import etcdapi_pb2 as pb
from shoal_store_etcd.provider import EtcdStore
from shoal_store_etcd.testing import EtcdCluster, running_cluster
from test_etcd_conformance import options


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds} s")
        await asyncio.sleep(0.02)


class Managers:
    def __init__(self, etcd: EtcdCluster, root: Path, prefix: str) -> None:
        self.etcd, self.root, self.prefix = etcd, root, prefix
        self.stores: dict[str, EtcdStore] = {}
        self.machines: dict[str, RecordingMachine] = {}

    async def start(self, name: str, *, bootstrap: bool = False, join: bool = False) -> EtcdStore:
        store = EtcdStore(
            self.root / name, options(self.etcd, self.prefix), node_id=name, addr=f"{name}:2377"
        )
        machine = RecordingMachine()
        await store.start(machine, bootstrap=bootstrap, join=join)
        self.stores[name], self.machines[name] = store, machine
        return store

    def leader(self) -> EtcdStore | None:
        leaders = [s for s in self.stores.values() if s.is_leader()]
        assert len(leaders) <= 1, "two managers lead at once"
        return leaders[0] if leaders else None

    async def crash(self, name: str) -> None:
        """Gone without a word: no lease revoke, so its keys live until the lease expires."""
        store = self.stores.pop(name)
        store._lease = 0  # stop() would revoke it: a crash does not
        await store.stop()

    async def close(self) -> None:
        for store in self.stores.values():
            await store.stop()


def run(body: Callable[[Managers], Awaitable[None]], etcd: EtcdCluster, root: Path, prefix: str) -> None:
    async def main() -> None:
        managers = Managers(etcd, root, prefix)
        try:
            await asyncio.wait_for(body(managers), 120)
        finally:
            await managers.close()

    asyncio.run(main())


def test_managers_join_replicate_fail_over_and_leave(etcd: EtcdCluster, tmp_path: Path) -> None:
    async def body(m: Managers) -> None:
        m1 = await m.start("m1", bootstrap=True)
        assert m1.is_leader()
        for name in ("m2", "m3"):
            joiner = await m.start(name, join=True)
            assert not joiner.is_leader()
            await m1.add_member(name, f"{name}:2377")
        index = await m1.propose(b"entry-1")
        await until(
            lambda: all(x.state.get(index) == b"entry-1" for x in m.machines.values()), 10, "replication"
        )
        with pytest.raises(NotLeaderError):
            await m.stores["m2"].propose(b"not on a follower")
        members = {i.node_id: i for i in m1.members()}
        assert set(members) == {"m1", "m2", "m3"} and members["m1"].leader
        await until(lambda: all(i.reachable for i in m1.members()), 5, "every manager reachable")
        lead = m.stores["m2"].leader()
        assert lead is not None and (lead.node_id, lead.addr) == ("m1", "m1:2377")

        # The leader crashes: its lease expires and another manager takes over.
        began = time.monotonic()
        await m.crash("m1")
        await until(lambda: m.leader() is not None, 10, "a new leader")
        failover = time.monotonic() - began
        new = m.leader()
        assert new is not None
        assert failover < 2 * new.options.lease_ttl + 1, failover
        second = await new.propose(b"entry-2")
        assert second > index
        await until(
            lambda: all(
                x.state.get(second) == b"entry-2" for x in m.machines.values() if x is not m.machines["m1"]
            ),
            10,
            "replication after failover",
        )

        # Leadership handed over on purpose, then a manager removed: it learns it is out.
        other = next(s for n, s in m.stores.items() if s is not new)
        assert await new.transfer_leadership(timeout=10) == other.node_id
        await until(lambda: other.is_leader(), 5, "the hand-over")
        events = new.leadership()
        assert await anext(events) is False
        await other.remove_member(new.node_id)
        with pytest.raises(MemberRemoved):
            await asyncio.wait_for(anext(events), 5)

    run(body, etcd, tmp_path, "/t/managers")


@pytest.fixture
def own_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with running_cluster(tmp_path_factory.mktemp("etcd-quorum")) as cluster:
        yield cluster


def test_etcd_quorum_lost_gives_no_leader_fast(own_etcd: EtcdCluster, tmp_path: Path) -> None:
    async def body(m: Managers) -> None:
        m1 = await m.start("m1", bootstrap=True)
        await m1.propose(b"before")
        own_etcd.stop(1)
        own_etcd.stop(2)
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await m1.propose(b"without quorum")
        refused = time.monotonic() - began
        assert refused < m1.options.timeout_ms / 1000 * 3 + 1, refused
        await until(lambda: not m1.is_leader(), 2 * m1.options.lease_ttl + 2, "the leader to step down")
        stepped_down = time.monotonic() - began
        print(
            f"etcd quorum lost: write refused after {refused:.2f} s, leader stepped down after {stepped_down:.2f} s"
        )

    run(body, own_etcd, tmp_path, "/t/quorum")


def test_snapshot_compacts_etcd_and_restarts_and_joins_from_it(etcd: EtcdCluster, tmp_path: Path) -> None:
    """Every ``snapshot_interval`` entries the leader writes a snapshot and compacts etcd's
    history up to it: a restart and a new manager rebuild the state from the snapshot plus
    the entries after it (before, the history grew forever and a compacted one was refused)."""

    async def body(m: Managers) -> None:
        m1 = await m.start("m1", bootstrap=True)
        m1.tune({"snapshot_interval": 5})
        for n in range(12):
            await m1.propose(b"entry-%d" % n)
        await until(lambda: m1.status()["snapshot_index"] != 0, 10, "a snapshot")
        snapshot_index = int(str(m1.status()["snapshot_index"]))
        expected = dict(m.machines["m1"].state)
        assert len(expected) == 12

        # etcd's history before the snapshot is gone: a watch from revision 1 is refused.
        client = m1._client
        assert client is not None

        async def first_watch_reply() -> pb.WatchResponse:
            async def one() -> AsyncIterator[pb.WatchRequest]:
                yield pb.WatchRequest(create_request=pb.WatchCreateRequest(key=m1.k_log, start_revision=1))
                await asyncio.Event().wait()

            async for reply in client.watch(one()):
                if reply.compact_revision or reply.events:
                    return reply  # type: ignore[no-any-return]
            raise AssertionError("the watch ended")

        reply = await asyncio.wait_for(first_watch_reply(), 10)
        assert reply.compact_revision >= snapshot_index > 0, reply

        # A manager restarted after the compaction gets the whole state back.
        await m1.stop()
        del m.stores["m1"]
        again = await m.start("m1")
        assert m.machines["m1"].state == expected
        await until(lambda: again.is_leader(), 10, "the restarted manager to lead")
        index = await again.propose(b"after restart")
        # A manager that joins after the compaction gets it too.
        await m.start("m2", join=True)
        await again.add_member("m2", "m2:2377")
        await until(lambda: m.machines["m2"].state.get(index) == b"after restart", 10, "m2 caught up")
        assert m.machines["m2"].state == {**expected, index: b"after restart"}

    run(body, etcd, tmp_path, "/t/snapshots")
