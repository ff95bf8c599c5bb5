"""Service discovery and VIP load balancing on real kernel networking: tasks (namespaces) on two
hosts ask the resolver the provider opened at 127.0.0.11:53 inside each of them."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from shoal.plugin import EndpointAttachment, NetworkError, NetworkSpec, NodeNetwork, ServiceRecord
from shoal_network_overlay import OverlayNetwork
from shoal_network_overlay.testing import HOSTS, Lab, resolv_conf

CONTAINERS = 4
NET_A = NetworkSpec("neta", "a", "10.10.1.0/24", "10.10.1.1", 4100)
NET_B = NetworkSpec("netb", "b", "10.10.2.0/24", "10.10.2.1", 4200)
#: container -> (host, network, address)
PLACES = {
    "c1": ("h1", NET_A, "10.10.1.2"),
    "c2": ("h2", NET_A, "10.10.1.3"),
    "c3": ("h2", NET_A, "10.10.1.4"),
    "c4": ("h2", NET_B, "10.10.2.5"),
}
API = ServiceRecord("api", "10.10.1.100", ("10.10.1.3", "10.10.1.4"))
RR = ServiceRecord("rr", "", ("10.10.1.3", "10.10.1.4"))
OTHER = ServiceRecord("other", "10.10.2.100", ("10.10.2.5",))
UPSTREAM = "127.0.0.53"  # the test's "host resolver", in each host's namespace

#: Asks 127.0.0.11 one question; prints the rcode name and the A answers, sorted, on one line.
ASK = """
import sys
from dnslib import DNSRecord, QTYPE, RCODE
import time
name, tcp = sys.argv[1], sys.argv[2] == "tcp"
started = time.monotonic()
try:
    reply = DNSRecord.parse(DNSRecord.question(name).send("127.0.0.11", 53, tcp=tcp, timeout=5))
except OSError as exc:
    print(f"ERROR {exc.__class__.__name__}")
else:
    print(RCODE.get(reply.header.rcode), *sorted(str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A))
print(f"{time.monotonic() - started:.3f}", file=sys.stderr)
"""

#: The host's resolver: upstream.test -> 192.0.2.7, everything else NXDOMAIN.
RESOLVER = """
import socket, sys
from dnslib import DNSRecord, RR, A, RCODE
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    request = DNSRecord.parse(data); reply = request.reply()
    if str(request.q.qname) == "upstream.test.":
        reply.add_answer(RR(request.q.qname, rdata=A("192.0.2.7")))
    else:
        reply.header.rcode = RCODE.NXDOMAIN
    s.sendto(reply.pack(), peer)
"""


#: One connection attempt: "connected" or the error's class name.
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("connected")
except OSError as exc:
    print(exc.__class__.__name__)
"""


async def ask(lab: Lab, container: str, name: str, transport: str = "udp") -> str:
    return (await lab.sh(container, sys.executable, "-c", ASK, name, transport)).strip()


async def ask_timed(lab: Lab, container: str, name: str) -> tuple[str, float]:
    """The answer and how long the question took (measured in the asking process)."""
    out, took = await lab.sh_both(container, sys.executable, "-c", ASK, name, "udp")
    return out.strip(), float(took.strip().splitlines()[-1])


@pytest.fixture
def nodes_factory(lab: Lab, tmp_path: Path):  # type: ignore[no-untyped-def]
    async def make(conf: Path) -> dict[str, OverlayNetwork]:
        nodes = {h: OverlayNetwork(netns=lab.path(h), resolv_conf=conf) for h in ("h1", "h2")}
        for host, node in nodes.items():
            await node.start(NodeNetwork(f"node-{host}", HOSTS[host]))
            await node.set_peers([HOSTS[h] for h in nodes if h != host])
            for spec in (NET_A, NET_B):
                await node.create_network(spec)
                await node.set_records(NET_A.network_id, [API, RR])
                await node.set_records(NET_B.network_id, [OTHER])
        for container, (host, spec, address) in PLACES.items():
            await nodes[host].attach(
                EndpointAttachment(
                    f"task-{container}", spec.network_id, f"{address}/24", (), lab.path(container)
                )
            )
        return nodes

    return make


async def test_names_tasks_dnsrr_scoping_and_forwarding(lab: Lab, tmp_path: Path, nodes_factory) -> None:  # type: ignore[no-untyped-def]
    lab.serve_script("h1", RESOLVER, UPSTREAM)
    lab.serve_script("h2", RESOLVER, UPSTREAM)
    nodes = await nodes_factory(resolv_conf(tmp_path, UPSTREAM))
    before_c1 = lab.links("c1")

    assert await ask(lab, "c1", "api") == "NOERROR 10.10.1.100"  # the VIP, across hosts
    assert await ask(lab, "c1", "API.") == "NOERROR 10.10.1.100"  # DNS names are case-blind
    assert await ask(lab, "c1", "tasks.api") == "NOERROR 10.10.1.3 10.10.1.4"
    assert await ask(lab, "c1", "rr") == "NOERROR 10.10.1.3 10.10.1.4"  # dnsrr: no VIP
    assert await ask(lab, "c1", "api", "tcp") == "NOERROR 10.10.1.100"
    # scoped: "other" lives on network B only; c1 (on A) does not see it, c4 (on B) does not see api
    assert await ask(lab, "c1", "other") == "NXDOMAIN"
    assert await ask(lab, "c4", "other") == "NOERROR 10.10.2.100"
    assert await ask(lab, "c4", "api") == "NXDOMAIN"
    # every other name goes to the host's resolvers, from the node's namespace
    assert await ask(lab, "c1", "upstream.test") == "NOERROR 192.0.2.7"
    assert await nodes["h1"].resolve(NET_A.network_id, "tasks.api") in (
        ["10.10.1.3", "10.10.1.4"],
        ["10.10.1.4", "10.10.1.3"],
    )
    assert await nodes["h1"].resolve(NET_B.network_id, "api") == []

    # records follow set_records
    await nodes["h1"].set_records(NET_A.network_id, [ServiceRecord("api", "10.10.1.100", ("10.10.1.4",))])
    assert await ask(lab, "c1", "tasks.api") == "NOERROR 10.10.1.4"
    with pytest.raises(NetworkError, match="is not an IPv4 address"):
        await nodes["h1"].set_records(NET_A.network_id, [ServiceRecord("bad", "10.10.1.x", ())])
    assert await ask(lab, "c1", "tasks.api") == "NOERROR 10.10.1.4"  # a refused call changed nothing

    # detach: the resolver and the VIP table leave the task's namespace with its last endpoint
    await nodes["h1"].detach("task-c1", NET_A.network_id)
    assert await ask(lab, "c1", "api", "tcp") == "ERROR ConnectionRefusedError"
    assert lab.ruleset("c1") == [] and lab.links("c1") != before_c1
    for node in nodes.values():
        await node.cleanup()


async def test_no_upstream_answer_is_servfail_within_the_timeout(
    lab: Lab,
    tmp_path: Path,
    nodes_factory,  # type: ignore[no-untyped-def]
) -> None:
    nodes = await nodes_factory(resolv_conf(tmp_path, "127.0.0.54"))  # nothing listens there
    answer, took = await ask_timed(lab, "c1", "upstream.test")
    assert answer == "SERVFAIL" and 1.9 < took < 4  # the 2 s forwarding timeout
    for node in nodes.values():
        await node.cleanup()


async def test_vip_connections_spread_over_tasks_and_follow_records(
    lab: Lab, tmp_path: Path, nodes_factory
) -> None:  # type: ignore[no-untyped-def]
    nodes = await nodes_factory(resolv_conf(tmp_path))
    lab.serve("c2", "c2", 9000)
    lab.serve("c3", "c3", 9000)
    assert Counter(await lab.requests("c1", "10.10.1.100", 9000, 10)) == {"c2": 5, "c3": 5}
    await nodes["h1"].set_records(NET_A.network_id, [ServiceRecord("api", "10.10.1.100", ("10.10.1.4",))])
    assert await lab.requests("c1", "10.10.1.100", 9000, 4) == ["c3"] * 4
    await nodes["h1"].set_records(NET_A.network_id, [ServiceRecord("api", "10.10.1.100", ())])
    # refused at once (a TCP reset), not left to time out
    assert (
        await lab.sh("c1", sys.executable, "-c", CONNECT, "10.10.1.100", "9000")
    ).strip() == "ConnectionRefusedError"
    for node in nodes.values():
        await node.cleanup()
    assert lab.ruleset("c1") == []  # the VIP table is gone
    assert await ask(lab, "c1", "api", "tcp") == "ERROR ConnectionRefusedError"  # and the resolver


async def test_a_restarted_daemon_attaches_its_running_tasks_again_without_cutting_them(
    lab: Lab, tmp_path: Path, nodes_factory
) -> None:  # type: ignore[no-untyped-def]
    """After a restart the agent calls create_network and attach again for its running tasks:
    the interfaces stay as they are and the resolver answers again."""
    nodes = await nodes_factory(resolv_conf(tmp_path))
    links = lab.links("c1")
    await nodes["h1"].close()  # the daemon stops: its resolvers go with the process
    assert await ask(lab, "c1", "api", "tcp") == "ERROR ConnectionRefusedError"
    restarted = OverlayNetwork(netns=lab.path("h1"), resolv_conf=resolv_conf(tmp_path))
    await restarted.start(NodeNetwork("node-h1", HOSTS["h1"]))
    await restarted.create_network(NET_A)
    await restarted.set_records(NET_A.network_id, [API, RR])
    await restarted.attach(
        EndpointAttachment("task-c1", NET_A.network_id, "10.10.1.2/24", (), lab.path("c1"))
    )
    assert lab.links("c1") == links
    assert await ask(lab, "c1", "api") == "NOERROR 10.10.1.100"
    for node in (restarted, nodes["h2"]):
        await node.cleanup()


#: Holds 127.0.0.11:53 (UDP) in a task's namespace, as something else in the container might.
SQUATTER = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.11", 53))
print("ready", flush=True)
time.sleep(3600)
"""


async def test_a_task_whose_resolver_address_is_taken_is_refused_and_left_unattached(lab: Lab) -> None:
    node = OverlayNetwork(netns=lab.path("h1"))
    await node.start(NodeNetwork("node-h1", HOSTS["h1"]))
    await node.create_network(NET_A)
    lab.serve_script("c1", SQUATTER)
    with pytest.raises(
        NetworkError, match=r"^discovery: cannot listen on 127\.0\.0\.11:53 in .*: Address already in use$"
    ):
        await node.attach(EndpointAttachment("task-c1", NET_A.network_id, "10.10.1.2/24", (), lab.path("c1")))
    assert lab.links("c1") == ["lo"]  # all or nothing
    await node.cleanup()
