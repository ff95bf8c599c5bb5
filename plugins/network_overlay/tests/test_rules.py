"""The overlay plugin's pure logic: names, the scripts given to nft, discovery answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from shoal.plugin import NetworkError, ServiceRecord
from shoal_network_overlay.dns import MAX_IN_FLIGHT, Answerer, EndpointResolver, Records, Upstream, _Datagrams
from shoal_network_overlay.ingress import Forward, base_script, publish_script
from shoal_network_overlay.names import (
    bridge_name,
    endpoint_name,
    is_ours,
    node_digest,
    peer_name,
    vxlan_name,
)
from shoal_network_overlay.shortcut import TO_TUNNEL_PREF, answers_script, reverse_fits
from shoal_network_overlay.vip import vip_script


def test_names_fit_linux_and_differ_per_node() -> None:
    one, two = node_digest("node-one"), node_digest("node-two")
    assert one != two
    largest = 2**24 - 1
    for name in (bridge_name(one, largest), vxlan_name(one, largest), endpoint_name(one, "t" * 25, "n" * 25)):
        assert len(name) <= 15 and is_ours(name, one) and not is_ours(name, two)
    assert endpoint_name(one, "t", "n") != peer_name(one, "t", "n")
    assert bridge_name(one, 4096) != bridge_name(two, 4096)  # two nodes in one namespace


def test_publish_script_replaces_one_port_or_removes_it() -> None:
    script = publish_script("shoal_x", Forward("tcp", 8080, 80, ("10.0.0.2", "10.0.0.3")))
    assert "flush chain ip shoal_x p_tcp_8080" in script
    assert "tcp dport 8080 dnat to numgen inc mod 2 map { 0 : 10.0.0.2, 1 : 10.0.0.3 } : 80" in script
    assert "add element ip shoal_x tcp_ports { 8080 : jump p_tcp_8080 }" in script
    empty = publish_script("shoal_x", Forward("udp", 53, 53, ()))
    assert empty.endswith("delete element ip shoal_x udp_ports { 53 }\ndelete chain ip shoal_x p_udp_53\n")
    assert "dnat" not in empty
    assert "fib daddr type local tcp dport vmap @tcp_ports" in base_script("shoal_x", "192.0.2.1")


@pytest.mark.parametrize(
    "forward",
    [
        Forward("sctp", 8080, 80, ("10.0.0.2",)),
        Forward("tcp", 0, 80, ("10.0.0.2",)),
        Forward("tcp", 8080, 70000, ("10.0.0.2",)),
        Forward("tcp", 8080, 80, ("10.0.0.2; flush ruleset",)),
    ],
)
def test_values_that_could_change_an_nft_script_are_refused(forward: Forward) -> None:
    with pytest.raises(NetworkError):
        publish_script("shoal_x", forward)


def test_vip_script_balances_refuses_without_tasks_and_checks_addresses() -> None:
    script = vip_script(
        [
            ServiceRecord("api", "10.0.1.2/24", ("10.0.1.5", "10.0.1.6")),
            ServiceRecord("idle", "10.0.1.3", ()),
            ServiceRecord("rr", "", ("10.0.1.7",)),
        ]
    )
    assert "ip daddr 10.0.1.2 dnat to numgen inc mod 2 map { 0 : 10.0.1.5, 1 : 10.0.1.6 }" in script
    assert "ip daddr 10.0.1.3 meta l4proto tcp reject with tcp reset" in script
    assert "10.0.1.7" not in script  # dnsrr: no VIP
    with pytest.raises(NetworkError, match="is not an IPv4 address"):
        vip_script([ServiceRecord("api", "10.0.1.2 } ; flush ruleset", ())])


def test_records_are_scoped_case_blind_and_join_networks() -> None:
    records = Records()
    records.set(
        "a", [ServiceRecord("api", "10.0.1.2", ("10.0.1.5",)), ServiceRecord("rr", "", ("10.0.1.7",))]
    )
    records.set("b", [ServiceRecord("api", "10.0.2.2", ("10.0.2.5",))])
    assert records.lookup(["a"], "API.") == ["10.0.1.2"]
    assert records.lookup(["a"], "tasks.api") == ["10.0.1.5"]
    assert records.lookup(["a"], "rr") == ["10.0.1.7"]
    assert records.lookup(["b"], "rr") is None
    assert records.lookup(["a", "b"], "api") == ["10.0.1.2", "10.0.2.2"]  # a task on both networks
    assert records.lookup([], "api") is None


def test_unknown_name_without_resolvers_is_servfail_and_aaaa_of_a_known_name_is_empty(tmp_path: Path) -> None:
    records = Records()
    records.set("a", [ServiceRecord("api", "10.0.1.2", ())])
    answerer = Answerer(records, Upstream(tmp_path / "missing-resolv.conf", None))

    def ask(name: str, qtype: str = "A") -> DNSRecord:
        reply = asyncio.run(answerer.reply(DNSRecord.question(name, qtype).pack(), ["a"]))
        assert reply is not None
        return DNSRecord.parse(reply)

    assert ask("elsewhere.test").header.rcode == RCODE.SERVFAIL
    aaaa = ask("api", "AAAA")
    assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr
    assert [str(r.rdata) for r in ask("api").rr if r.rtype == QTYPE.A] == ["10.0.1.2"]
    assert asyncio.run(answerer.reply(b"garbage", ["a"])) is None


class _SilentUpstream(Upstream):
    """Host resolvers that never answer: every forwarded question stays in flight."""

    async def ask(self, query: bytes) -> bytes | None:
        await asyncio.Event().wait()
        return None


async def test_a_task_flooding_its_resolver_holds_a_bounded_number_of_questions(tmp_path: Path) -> None:
    resolver = EndpointResolver("/nonexistent", Answerer(Records(), _SilentUpstream(tmp_path / "r", None)))
    datagrams = _Datagrams(resolver)
    question = DNSRecord.question("elsewhere.test").pack()
    for _ in range(MAX_IN_FLIGHT * 3):
        datagrams.datagram_received(question, ("127.0.0.1", 5353))
    assert len(resolver.in_flight) == MAX_IN_FLIGHT
    await resolver.close()
    assert not resolver.in_flight


def test_the_shortcut_block_gets_each_local_mac_once_and_its_catch_all_after_them() -> None:
    """A frame for a local MAC must never reach the catch-all to the tunnel: a device joining
    the block adds only the filters it lacks, local MACs before the catch-all; a network whose
    host numbers would not all sort before the catch-all gets no block."""
    first = answers_script(4096, "shv1", "she1", ["10.0.0.2/24", "10.0.0.10/24"], set())
    lines = first.splitlines()
    assert lines[0] == "qdisc replace dev she1 ingress_block 4096 clsact"
    assert [line.split()[5] for line in lines[1:]] == ["2", "10", str(TO_TUNNEL_PREF)]
    assert "match ether dst 02:73:0a:00:00:0a classid 1:1" in lines[2]  # no action: goes on
    assert lines[3].endswith("action mirred egress redirect dev shv1")
    # the block has the node's and the catch-all already: only the new task's MAC is added
    second = answers_script(
        4096, "shv1", "shb1", ["10.0.0.2/24", "10.0.0.11/24"], {2, TO_TUNNEL_PREF}, side="egress"
    )
    assert second.splitlines()[0] == "qdisc replace dev shb1 egress_block 4096 clsact"
    assert [line.split()[5] for line in second.splitlines()[1:]] == ["11"]
    assert reverse_fits("10.0.0.0/16") and not reverse_fits("10.0.0.0/15")
