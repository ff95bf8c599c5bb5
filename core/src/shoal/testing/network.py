"""Conformance suite for network providers.

Use it from your plugin's tests::

    import pytest
    from shoal.testing.network import NetworkConformance

    class TestMyNetwork(NetworkConformance):
        declared_features = frozenset({"overlay", "ingress", "discovery"})  # as MyNetwork.features

        @pytest.fixture
        def network(self):
            return MyNetwork()

Every test then runs against your provider (the async tests carry ``pytest.mark.asyncio``).
``declared_features`` says, when the class is made, which checks apply: each declared
feature's contract, and the refusal of every method of the others. Checks that do not apply
are not collected (nothing is skipped), and ``test_declaration`` fails unless the provider's
own ``features`` are exactly ``declared_features`` (a class that claims a feature its provider
does not declare, or leaves one out, fails). They check the contract of ``shoal.roles.NetworkProvider`` that holds for every provider: the
declaration (role, API version, ``features`` a subset of ``shoal.roles.network.FEATURES``),
``start``/``cleanup``/``close`` idempotent and safe in any order a daemon may call them (a
node that leaves twice, a restart), and every method of a feature the provider does not
declare refusing with ``NetworkError`` (so the kernel never half-builds a network with a
provider that cannot finish it), and for each feature it does declare, the contract's
behaviour that needs no container: ``overlay`` (``create_network`` idempotent, an endpoint on a
network not created here refused in one line, removing what is missing is fine), ``ingress``
(publishing, re-publishing with fewer backends or none, unpublishing twice) and ``discovery``
(``NAME`` gives the VIP, or the tasks in dnsrr mode; ``tasks.NAME`` the tasks; records are
scoped to their network and replaced whole by ``set_records``). These run against the
provider as the ``network`` fixture builds it (the default plugin's fixture puts it in a
network namespace of its own, so they touch nothing of the host). The tests of each feature's
data path (overlay traffic between namespaces, ingress forwarding, answers inside a container)
need root and network namespaces and come with the plugin's implementation of that feature
(the default plugin's: ``plugins/network_overlay/tests``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest

from shoal.roles.base import API_VERSIONS
from shoal.roles.network import (
    FEATURE_DISCOVERY,
    FEATURE_INGRESS,
    FEATURE_OVERLAY,
    FEATURES,
    Backend,
    EndpointAttachment,
    NetworkError,
    NetworkProvider,
    NetworkSpec,
    NodeNetwork,
    PublishedPort,
    ServiceRecord,
)
from shoal.testing.applicability import collect_only_if, declared

#: A node on loopback: what a provider is started with in these tests.
NODE = NodeNetwork(node_id="conformance-node", advertise_ip="127.0.0.1")
SPEC = NetworkSpec(
    network_id="conformancenet", name="conformance", subnet="10.250.0.0/24", gateway="10.250.0.1", vni=4242
)
ATTACHMENT = EndpointAttachment(
    task_id="conformancetask",
    network_id=SPEC.network_id,
    address="10.250.0.2/24",
    aliases=("conformance",),
    sandbox="/proc/self/ns/net",
)
PORT = PublishedPort(service_id="conformancesvc", protocol="tcp", published=30999, target=80)

Call = Callable[[NetworkProvider], Awaitable[object]]

#: Every feature's methods, called with harmless arguments.
FEATURE_CALLS: dict[str, list[tuple[str, Call]]] = {
    FEATURE_OVERLAY: [
        ("set_peers", lambda n: n.set_peers(["127.0.0.2"])),
        ("create_network", lambda n: n.create_network(SPEC)),
        ("remove_network", lambda n: n.remove_network(SPEC.network_id)),
        ("attach", lambda n: n.attach(ATTACHMENT)),
        ("detach", lambda n: n.detach(ATTACHMENT.task_id, SPEC.network_id)),
    ],
    FEATURE_INGRESS: [
        ("publish", lambda n: n.publish(PORT, [Backend(task_id="t", address="127.0.0.1")])),
        ("unpublish", lambda n: n.unpublish(PORT.protocol, PORT.published)),
    ],
    FEATURE_DISCOVERY: [
        ("set_records", lambda n: n.set_records(SPEC.network_id, [ServiceRecord("svc", "", ())])),
        ("resolve", lambda n: n.resolve(SPEC.network_id, "svc")),
    ],
}
_CASES = [(feature, name, call) for feature, calls in FEATURE_CALLS.items() for name, call in calls]
#: The test of each feature's contract, collected only for a provider declaring the feature.
CONTRACT_TESTS = {
    FEATURE_OVERLAY: "test_overlay_contract",
    FEATURE_INGRESS: "test_ingress_contract",
    FEATURE_DISCOVERY: "test_discovery_contract",
}


class NetworkConformance:
    """Subclass, set ``declared_features`` and provide a ``network`` fixture returning a fresh,
    unstarted provider."""

    #: The features your provider declares (its ``features``), written out here because
    #: pytest decides what to collect before any provider is built.
    declared_features: ClassVar[frozenset[str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        features = declared(cls, "declared_features", frozenset, 'frozenset({"ingress"})')
        if not features <= FEATURES:
            raise TypeError(
                f"{cls.__qualname__}.declared_features names unknown features "
                f"{sorted(features - FEATURES)}: use some of {sorted(FEATURES)}"
            )
        for feature, test_name in CONTRACT_TESTS.items():
            collect_only_if(cls, NetworkConformance, test_name, feature in features)
        collect_only_if(cls, NetworkConformance, "test_undeclared_feature_refuses", features != FEATURES)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """The refusal checks, one per method of each feature not in ``declared_features``."""
        if metafunc.definition.originalname == "test_undeclared_feature_refuses":
            cases = [case for case in _CASES if case[0] not in self.declared_features]
            metafunc.parametrize(("feature", "method", "call"), cases, ids=[f"{f}-{m}" for f, m, _ in cases])

    @pytest.fixture
    def network(self) -> NetworkProvider:
        pytest.fail("override the `network` fixture to return your network provider")

    def test_declaration(self, network: NetworkProvider) -> None:
        assert network.role == "network"
        assert network.api_version == API_VERSIONS["network"]
        assert isinstance(network.features, frozenset)
        assert network.features <= FEATURES, f"unknown features: {set(network.features - FEATURES)}"
        assert isinstance(network, NetworkProvider)
        assert network.features == self.declared_features, (
            f"the provider declares features {sorted(network.features)} but "
            f"{type(self).__name__}.declared_features is {sorted(self.declared_features)}: make them equal"
        )

    @pytest.mark.asyncio
    async def test_start_cleanup_close_are_idempotent(self, network: NetworkProvider) -> None:
        await network.start(NODE)
        await network.start(NODE)  # a restarted daemon starts over what is there
        await network.cleanup()
        await network.cleanup()  # leaving twice (a removed node that also leaves) is fine
        await network.close()
        await network.close()

    @pytest.mark.asyncio
    async def test_cleanup_without_start(self, network: NetworkProvider) -> None:
        await network.cleanup()  # a node removed before its provider ever started
        await network.close()

    @pytest.mark.asyncio
    async def test_undeclared_feature_refuses(
        self, network: NetworkProvider, feature: str, method: str, call: Call
    ) -> None:
        """Parametrised by ``pytest_generate_tests`` with the features not declared."""
        _require(network, feature, claimed=False)
        await network.start(NODE)
        try:
            with pytest.raises(NetworkError) as raised:
                await call(network)
            message = str(raised.value)
            assert message and "\n" not in message, f"{method}: one line expected, got {message!r}"
        finally:
            await network.cleanup()
            await network.close()

    # ---------------------------------------------------------------- declared features

    @pytest.mark.asyncio
    async def test_overlay_contract(self, network: NetworkProvider) -> None:
        _require(network, FEATURE_OVERLAY, claimed=True)
        async with _started(network):
            await network.set_peers([])
            await network.create_network(SPEC)
            await network.create_network(SPEC)  # idempotent: every task on it asks again
            await network.detach("notask", SPEC.network_id)  # missing endpoint: fine
            elsewhere = EndpointAttachment("t", "notcreatednet", "10.251.0.2/24", (), ATTACHMENT.sandbox)
            with pytest.raises(NetworkError) as refused:
                await network.attach(elsewhere)  # refused before touching any namespace
            assert str(refused.value) and "\n" not in str(refused.value)
            await network.remove_network(SPEC.network_id)
            await network.remove_network(SPEC.network_id)  # missing: fine

    @pytest.mark.asyncio
    async def test_ingress_contract(self, network: NetworkProvider) -> None:
        _require(network, FEATURE_INGRESS, claimed=True)
        async with _started(network):
            two = [Backend("t1", "10.250.0.2"), Backend("t2", "10.250.0.3")]
            await network.publish(PORT, two)
            await network.publish(PORT, two[1:])  # replaces the set
            await network.publish(PORT, [])  # none: the port refuses connections
            udp = PublishedPort(PORT.service_id, "udp", PORT.published, PORT.target)
            await network.publish(udp, two)  # the same number in the other protocol
            for protocol in ("tcp", "udp", "udp"):  # unpublishing what is missing is fine
                await network.unpublish(protocol, PORT.published)

    @pytest.mark.asyncio
    async def test_discovery_contract(self, network: NetworkProvider) -> None:
        _require(network, FEATURE_DISCOVERY, claimed=True)
        async with _started(network):
            tasks = ("10.250.0.3", "10.250.0.4")
            await network.set_records(
                SPEC.network_id, [ServiceRecord("api", "10.250.0.100", tasks), ServiceRecord("rr", "", tasks)]
            )
            await network.set_records("othernet", [ServiceRecord("other", "10.251.0.100", ("10.251.0.3",))])
            assert await network.resolve(SPEC.network_id, "api") == ["10.250.0.100"]
            assert sorted(await network.resolve(SPEC.network_id, "tasks.api")) == list(tasks)
            assert sorted(await network.resolve(SPEC.network_id, "rr")) == list(tasks)  # dnsrr
            assert sorted(await network.resolve(SPEC.network_id, "tasks.rr")) == list(tasks)
            assert await network.resolve(SPEC.network_id, "unknown") == []
            assert await network.resolve(SPEC.network_id, "other") == []  # scoped per network
            assert await network.resolve("othernet", "api") == []
            await network.set_records(SPEC.network_id, [ServiceRecord("api", "10.250.0.100", tasks[1:])])
            assert await network.resolve(SPEC.network_id, "tasks.api") == [tasks[1]]  # replaced
            assert await network.resolve(SPEC.network_id, "rr") == []
            await network.set_records(SPEC.network_id, [])
            assert await network.resolve(SPEC.network_id, "api") == []


@contextlib.asynccontextmanager
async def _started(network: NetworkProvider) -> AsyncIterator[NetworkProvider]:
    """The provider started on ``NODE``, cleaned up and closed however the test ends."""
    await network.start(NODE)
    try:
        yield network
    finally:
        await network.cleanup()
        await network.close()


def _require(network: NetworkProvider, feature: str, *, claimed: bool) -> None:
    """Fail (never skip) when the provider disagrees with the class's ``declared_features``,
    which chose this test: the check would test the wrong contract."""
    really = feature in network.features
    assert really == claimed, (
        f"declared_features {'names' if claimed else 'leaves out'} {feature}, but the provider "
        f"{'does not declare' if claimed else 'declares'} it: make declared_features its features"
    )
