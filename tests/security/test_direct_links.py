"""The raft store's direct links between managers, on real daemons (``directnet``).

Three real managers and a worker, real mutual TLS. Replication runs over direct links (the
leader admits one from each follower), and a link is only for a current manager of this swarm:
a current manager's certificate gets the leader's Raft messages on it; after ``node demote``
the same certificate is refused at once, as is a worker's, as is a certificate of another
swarm; the refusals are logged. The swarm keeps committing meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

import pytest
from harness import ShoalNode, wait_until
from managers import leader, old_certificate, role_on_disk, three_managers_and_a_worker
from shoal import rpc
from shoal.roles.transport import RPCError, TLSMaterial
from shoal.testing.transport import ClusterPKI
from shoal_store_raft import directnet, wire
from shoal_store_raft.directnet import LinkRefused, TLSContexts
from shoal_store_raft.peernet import RAFT_DIRECT
from shoal_transport_grpc import GrpcTransport

pytestmark = [pytest.mark.cluster]

Factory = Callable[..., ShoalNode]


def where(addr: str, tls: TLSMaterial) -> wire.Envelope:
    """``RaftDirect`` of the manager at ``addr``: its member ID, node and direct listener."""

    async def ask() -> wire.Envelope:
        transport = GrpcTransport()
        try:
            request = wire.encode(wire.Envelope())
            return wire.decode(await transport.call(addr, RAFT_DIRECT, request, tls=tls, timeout=10))
        finally:
            await transport.close()

    return asyncio.run(ask())


def frames_on_link(listener: wire.Envelope, tls: TLSMaterial, member_id: int, within: float = 5.0) -> int:
    """Open a link to ``listener`` with ``tls`` as raft member ``member_id``; how many messages
    arrived within ``within`` seconds (0 when it was refused)."""
    frames: list[bytes] = []

    async def run() -> None:
        pull = directnet.pull(
            listener.from_addr,
            contexts=TLSContexts(lambda: tls),
            member_id=member_id,
            expect_node=listener.from_node,
            on_frame=frames.append,
        )
        with contextlib.suppress(TimeoutError, ssl.SSLError, ConnectionError, LinkRefused):
            await asyncio.wait_for(pull, within)

    asyncio.run(run())
    return len(frames)


def test_direct_links_carry_replication_for_current_managers_only(node_factory: Factory) -> None:
    m1, m2, m3, w1 = three_managers_and_a_worker(node_factory)
    m2_cert, m3_cert, w1_cert = old_certificate(m2), old_certificate(m3), old_certificate(w1)
    ids = {m.name: m.node_id() for m in (m1, m2, m3)}
    lead = leader([m1, m2, m3])
    others = [m for m in (m1, m2, m3) if m is not lead]
    # The leader admitted a link from each follower: replication runs over them.
    wait_until(
        lambda: all(f"direct link from node {ids[m.name]}" in lead.log_text() for m in others),
        30,
        what="the leader to admit a direct link from each follower",
    )
    # ... and says so in `shoal info` (what an operator checks a firewall with).
    wait_until(
        lambda: len(lead.info()["Store"]["direct_links"]["to"]) == 2,
        30,
        what="the leader's info to list a direct link to each follower",
    )
    asker = m2_cert if lead is not m2 else m3_cert
    listener = where(lead.addr, asker)
    assert listener.from_addr and listener.from_node == ids[lead.name]
    m3_member = where(m3.addr, m2_cert).from_member

    # A current manager's certificate, as its own member: the leader's messages flow.
    assert frames_on_link(listener, m3_cert, m3_member) > 0
    # A worker's certificate, and a manager certificate of another swarm: nothing.
    assert frames_on_link(listener, w1_cert, m3_member, within=3) == 0
    stranger = ClusterPKI().node(ids["m3"])
    assert frames_on_link(listener, stranger, m3_member, within=3) == 0

    # Demoted: the same certificate (still a valid manager certificate) gets nothing more.
    lead.ok("node", "demote", "m3")
    wait_until(lambda: role_on_disk(m3) == rpc.WORKER_OU, 60, what="m3 to renew as a worker")
    m3.kill()
    lead = leader([m1, m2])
    listener = where(lead.addr, m2_cert if lead is not m2 else old_certificate(m1))
    assert frames_on_link(listener, m3_cert, m3_member, within=3) == 0
    wait_until(
        lambda: any(
            "refused a direct link" in line and ids["m3"] in line for line in lead.log_text().splitlines()
        ),
        10,
        what="the leader to log the refused link",
    )
    # The swarm still commits (replication between the two managers left is unharmed).
    lead.ok("service", "create", "--detach", "--name", "after", "--replicas", "0", "shoal-busybox:1")
    with pytest.raises(RPCError):  # and the demoted certificate cannot even ask where the listener is
        where(lead.addr, m3_cert)
