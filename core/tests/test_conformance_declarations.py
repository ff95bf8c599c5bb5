"""The network, runtime and secrets conformance suites collect only the checks that apply, and
a class that misstates its provider fails.

What applies is declared on the suite's subclass (``declared_features``, ``has_find``,
``uses_cluster_material``) because pytest collects before any provider exists. The suites set
the checks that do not apply to None (not collected, so CI shows no skips) and check at run
time that the declaration is true: a class claiming more or less than its provider does fails.
Each case runs a small suite file through pytest in this process and reads the outcomes.
"""

from __future__ import annotations

import pytest
from shoal.testing.network import NetworkConformance
from shoal.testing.runtime import RuntimeConformance
from shoal.testing.secrets import SecretsConformance

pytest_plugins = ["pytester"]

INNER_OPTIONS = (
    "-p", "no:cacheprovider", "--import-mode=importlib", "-o", "asyncio_mode=auto",
    "-o", "asyncio_default_fixture_loop_scope=function", "-q",
)  # fmt: skip

NETWORK_SUITES = """
import pytest
from shoal.plugin import API_VERSIONS, NetworkError
from shoal.testing.network import NetworkConformance


class NoFeatures:
    role = "network"
    api_version = API_VERSIONS["network"]
    features = frozenset()

    async def start(self, node): pass
    async def cleanup(self): pass
    async def close(self): pass

    async def _refuse(self, *args):
        raise NetworkError("this provider has no such feature")

    set_peers = create_network = remove_network = attach = detach = _refuse
    publish = unpublish = set_records = resolve = _refuse


class TestHonest(NetworkConformance):
    declared_features = frozenset()

    @pytest.fixture
    def network(self):
        return NoFeatures()


class TestClaimsOverlay(NetworkConformance):
    declared_features = frozenset({"overlay"})

    @pytest.fixture
    def network(self):
        return NoFeatures()
"""

RUNTIME_SUITE = """
import pytest
from shoal.testing.runtime import RuntimeConformance
from shoal_runtime_fake import FakeOptions, FakeRuntime


class TestClaimsNoFind(RuntimeConformance):
    has_find = False  # FakeRuntime has find()

    @pytest.fixture
    def runtime(self):
        return FakeRuntime(FakeOptions(images=("shoal-busybox:1",)))

    @pytest.fixture
    def image(self):
        return "shoal-busybox:1"

    @pytest.fixture
    def engine_containers(self):
        async def containers(node_id):
            return []
        return containers
"""

SECRETS_SUITES = """
import pytest
from shoal.testing.secrets import SecretsConformance
from shoal_secrets_internal import InternalSecrets


class OneKey(InternalSecrets):
    async def new_material(self):
        return b"k" * 32  # the same every time: as a provider that uses no cluster material


class TestHonest(SecretsConformance):
    uses_cluster_material = False

    @pytest.fixture
    def secrets(self):
        return OneKey()


class TestClaimsMaterial(SecretsConformance):
    uses_cluster_material = True

    @pytest.fixture
    def secrets(self):
        return OneKey()
"""


def outcomes(pytester: pytest.Pytester, source: str, *args: str) -> dict[str, set[str]]:
    """Each outcome's test IDs (class::test[params]) of running ``source`` as a test file
    (``-k`` in ``args`` matches this test's own name too: pytester's folder is named after it)."""
    pytester.makepyfile(test_suite=source)
    recorder = pytester.inline_run(*INNER_OPTIONS, *args)
    passed, skipped, failed = recorder.listoutcomes()
    collected = recorder.getreports("pytest_collectreport")
    assert all(report.passed for report in collected), "the suite file did not collect"
    return {
        name: {report.nodeid.split("::", 1)[1] for report in reports}
        for name, reports in (("passed", passed), ("skipped", skipped), ("failed", failed))
    }


def test_network_suite_collects_only_the_declared_features_and_fails_a_false_claim(
    pytester: pytest.Pytester,
) -> None:
    seen = outcomes(pytester, NETWORK_SUITES)
    assert seen["skipped"] == set()
    assert seen["failed"] == {
        "TestClaimsOverlay::test_declaration",
        "TestClaimsOverlay::test_overlay_contract",
    }
    honest = {test for test in seen["passed"] if test.startswith("TestHonest::")}
    assert len(honest) == 3 + 9  # declaration, start/cleanup twice, one refusal per method
    assert not any("contract" in test for test in honest)
    claims = {test for test in seen["passed"] if test.startswith("TestClaimsOverlay::")}
    assert not any("[overlay-" in test for test in claims)  # refusals of a claimed feature: not collected
    assert {test for test in claims if "refuses" in test} == {
        f"TestClaimsOverlay::test_undeclared_feature_refuses[{case}]"
        for case in ("ingress-publish", "ingress-unpublish", "discovery-set_records", "discovery-resolve")
    }


def test_runtime_suite_fails_a_false_has_find_and_does_not_collect_the_lookup_check(
    pytester: pytest.Pytester,
) -> None:
    seen = outcomes(pytester, RUNTIME_SUITE, "-k", "find_is_as_declared or find_looks")
    assert seen == {
        "passed": set(),
        "skipped": set(),
        "failed": {"TestClaimsNoFind::test_find_is_as_declared"},
    }


def test_secrets_suite_checks_a_foreign_key_is_refused_only_when_declared(
    pytester: pytest.Pytester,
) -> None:
    seen = outcomes(pytester, SECRETS_SUITES, "-k", "material_is or other_material_is")
    assert seen == {
        "passed": {
            "TestHonest::test_material_is_bytes",
            "TestHonest::test_material_is_as_declared",
            "TestClaimsMaterial::test_material_is_bytes",
        },
        "skipped": set(),
        "failed": {
            "TestClaimsMaterial::test_material_is_as_declared",
            "TestClaimsMaterial::test_other_material_is_refused",
        },
    }


@pytest.mark.parametrize(
    ("suite", "attribute"),
    [
        (NetworkConformance, "declared_features"),
        (RuntimeConformance, "has_find"),
        (SecretsConformance, "uses_cluster_material"),
    ],
)
def test_a_subclass_that_declares_nothing_is_refused_in_one_line(suite: type, attribute: str) -> None:
    with pytest.raises(
        TypeError, match=f"^TestUndeclared must set the class attribute {attribute} "
    ) as raised:
        type("TestUndeclared", (suite,), {})
    assert "\n" not in str(raised.value)


def test_unknown_network_features_are_refused() -> None:
    with pytest.raises(TypeError, match=r"names unknown features \['mesh'\]"):
        type("TestMesh", (NetworkConformance,), {"declared_features": frozenset({"mesh"})})
