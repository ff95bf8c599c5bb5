"""A CA plugin may sign with an intermediate under an offline root (issue 16, item 6).

The kernel used to keep only the leaf of what ``sign`` returned and drop ``chain_pem``: such a
CA passed the conformance suite, and then every TLS handshake of the cluster failed (``unable
to get local issuer certificate``). Now the node keeps and presents the leaf followed by the
intermediates, and the cluster root stays the offline root that join tokens pin.

The fast tests run the CA conformance suite (which now opens real mutual-TLS connections and
checks backdating) against the test plugin in ``intermediate_ca``, and check the suite refuses
broken variants of it. The cluster test runs real daemons: 1 manager + 1 worker whose
certificates of seconds renew through the CA, and a service on the worker.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from collections.abc import Callable
from functools import partial
from pathlib import Path

import intermediate_ca
import pytest
from cryptography.hazmat.primitives import serialization
from harness import TEST_IMAGE, ShoalNode, wait_until
from intermediate_ca import IntermediateCA
from shoal import identity
from shoal.roles.ca import CAProvider, IssuedCertificate
from shoal.testing.ca import CAConformance

Factory = Callable[..., ShoalNode]


class TestIntermediateCAConformance(CAConformance):
    @pytest.fixture
    async def ca(self, tmp_path: Path) -> CAProvider:
        intermediate_ca.write_material(tmp_path / "material")
        return IntermediateCA(tmp_path / "material")


class DropsChain(IntermediateCA):
    """Signs with the intermediate but does not say so."""

    async def sign(self, csr_pem: bytes, **kwargs: object) -> IssuedCertificate:
        issued = await super().sign(csr_pem, **kwargs)  # type: ignore[arg-type]
        return IssuedCertificate(issued.cert_pem)


class NotBackdated(IntermediateCA):
    """Signs certificates valid from the second they are signed (clock skew breaks joins)."""

    async def sign(self, csr_pem: bytes, **kwargs: object) -> IssuedCertificate:
        issued = await super().sign(csr_pem, **kwargs)  # type: ignore[arg-type]
        leaf = identity.load_certificate(issued.cert_pem)
        rebuilt = intermediate_ca.resign(leaf, self._key, not_before=dt.datetime.now(dt.UTC))
        return IssuedCertificate(rebuilt.public_bytes(serialization.Encoding.PEM), issued.chain_pem)


@pytest.mark.parametrize(
    ("broken", "intermediate_is_ca", "suite_test"),
    [
        (DropsChain, True, "test_mutual_tls_with_what_was_issued"),
        (IntermediateCA, False, "test_mutual_tls_with_what_was_issued"),
        (IntermediateCA, False, "test_chain_verifies_against_root"),
        (NotBackdated, True, "test_backdated"),
    ],
)
async def test_suite_refuses(
    broken: type[IntermediateCA], intermediate_is_ca: bool, suite_test: str, tmp_path: Path
) -> None:
    root_pem = intermediate_ca.write_material(tmp_path / "material", intermediate_is_ca=intermediate_is_ca)
    ca = broken(tmp_path / "material")
    suite = CAConformance()
    root = await ca.create_root()
    assert root.cert_pem == root_pem and not root.key_pem
    await ca.load_root(root)
    with pytest.raises((AssertionError, identity.CertificateError, ssl.SSLError)):
        await getattr(suite, suite_test)(ca, root)


def site_env(site: Path) -> dict[str, str]:
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path), "PYTHONDONTWRITEBYTECODE": "1"}


def consistent_credentials(node: ShoalNode) -> identity.NodeCredentials | None:
    """The node's key and certificate, or None while a renewal is replacing them (3 files)."""
    try:
        return identity.load_credentials(node.state_dir / "certificates")
    except identity.CertificateError:
        return None


@pytest.mark.cluster
def test_cluster_runs_with_an_intermediate_ca(node_factory: Factory, tmp_path: Path) -> None:
    site = tmp_path / "site"
    root_pem = intermediate_ca.install(site)
    # Certificates of seconds (test-only floor), so the worker renews through the CA too.
    env = {**site_env(site), "SHOAL_UNSAFE_TEST_MIN_CERT_EXPIRY": "6"}
    manager = node_factory(name="mgr", env=env).start()
    manager.init("--plugin", "ca=intermediate")
    manager.ok("swarm", "update", "--cert-expiry", "12s")
    worker = node_factory(name="wrk", host="127.0.0.2", env=env).start()
    worker.join(manager)
    cert_file = worker.state_dir / "certificates" / "swarm-node.crt"
    joined = cert_file.read_bytes()
    wait_until(lambda: cert_file.read_bytes() != joined, 40, interval=0.5, what="a renewal over mutual TLS")
    wait_until(
        lambda: (
            {
                row["Hostname"]: row["Status"]
                for row in manager.ok("node", "ls", "--format", "json").json_lines()
            }
            == {"mgr": "Ready", "wrk": "Ready"}
        ),
        60,
        what="both nodes Ready",
    )

    # The cluster root is the offline root (what join tokens pin); each node presents its
    # certificate followed by the intermediate, and that chain verifies against the root.
    for node in (manager, worker):
        creds = wait_until(partial(consistent_credentials, node), 10, what="a key and certificate that match")
        assert creds.root_pem == root_pem
        chain = identity.load_certificates(creds.cert_pem)
        assert [c.subject.rfc4514_string() for c in chain[1:]] == ["CN=issuing intermediate"]
        identity.verify_chain(creds.cert_pem, root_pem)

    manager.ok(
        "service", "create", "--name", "web", "--replicas", "2", "--constraint", "node.role==worker",
        "--detach", TEST_IMAGE, "sleep", "3600",
    )  # fmt: skip
    wait_until(lambda: len(manager.running("web")) == 2, 90, what="2 tasks of web running on the worker")
    assert {task["Node"] for task in manager.running("web")} == {"wrk"}
