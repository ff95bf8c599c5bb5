"""The internal CA: the conformance suite plus Swarm's exact certificate shape."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from shoal import identity
from shoal.roles.ca import RootMaterial
from shoal.testing.ca import CAConformance
from shoal_ca_internal import InternalCA
from shoal_ca_internal.ca import make_root

HOUR = dt.timedelta(hours=1)


class TestInternalCAConformance(CAConformance):
    @pytest.fixture
    async def ca(self) -> InternalCA:
        return InternalCA()


async def _ready_ca() -> tuple[InternalCA, RootMaterial]:
    ca = InternalCA()
    return ca, await ca.create_root()


async def test_root_matches_swarm() -> None:
    before = dt.datetime.now(dt.UTC)
    _, root = await _ready_ca()
    cert = identity.load_certificate(root.cert_pem)
    assert cert.subject.rfc4514_string() == "CN=swarm-ca"
    assert cert.issuer == cert.subject
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1)
    cert.verify_directly_issued_by(cert)  # self-signed
    lifetime = cert.not_valid_after_utc - before
    assert dt.timedelta(days=7299) < lifetime < dt.timedelta(days=7301)  # 630720000 s = 7300 days
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert root.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


async def test_node_certificate_matches_swarm() -> None:
    ca, root = await _ready_ca()
    key = identity.generate_key()
    before = dt.datetime.now(dt.UTC)
    issued = await ca.sign(
        identity.build_csr(key, "ignored"),
        node_id="node-a",
        role="swarm-manager",
        cluster_id="cluster-x",
        expiry_seconds=7200,
    )
    cert = identity.load_certificate(issued.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-a"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "swarm-manager"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster-x"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["swarm-manager", "node-a", "swarm-ca"]
    # Backdated one hour, valid for exactly the expiry asked for.
    assert abs(cert.not_valid_before_utc - (before - HOUR)) < dt.timedelta(seconds=2)
    assert abs(cert.not_valid_after_utc - (before + 2 * HOUR)) < dt.timedelta(seconds=2)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(identity.load_certificate(root.cert_pem))
    assert identity.key_matches_cert(key, issued.cert_pem)


async def test_worker_sans_have_no_ca_name() -> None:
    ca, _ = await _ready_ca()
    issued = await ca.sign(
        identity.build_csr(identity.generate_key()),
        node_id="node-b",
        role="swarm-worker",
        cluster_id="c",
        expiry_seconds=3600,
    )
    sans = identity.load_certificate(issued.cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert sans.value.get_values_for_type(x509.DNSName) == ["swarm-worker", "node-b"]


async def test_load_root_survives_restart() -> None:
    _, root = await _ready_ca()
    restarted = InternalCA()
    assert await restarted.health() == "internal CA: no root loaded"
    with pytest.raises(RuntimeError, match="no root loaded"):
        await restarted.sign(
            identity.build_csr(identity.generate_key()),
            node_id="n",
            role="swarm-worker",
            cluster_id="c",
            expiry_seconds=60,
        )
    await restarted.load_root(root)
    assert await restarted.health() == ""
    issued = await restarted.sign(
        identity.build_csr(identity.generate_key()),
        node_id="n",
        role="swarm-worker",
        cluster_id="c",
        expiry_seconds=60,
    )
    identity.verify_chain(issued.cert_pem, root.cert_pem)


async def test_load_root_rejects_unusable_roots() -> None:
    ca = InternalCA()
    root, other = make_root(), make_root()
    with pytest.raises(ValueError, match="needs the root key"):
        await ca.load_root(RootMaterial(cert_pem=root.cert_pem))
    with pytest.raises(ValueError, match="does not match"):
        await ca.load_root(RootMaterial(cert_pem=root.cert_pem, key_pem=other.key_pem))
    with pytest.raises(ValueError, match="invalid root certificate"):
        await ca.load_root(RootMaterial(cert_pem=b"x", key_pem=root.key_pem))


async def test_certificate_never_outlives_the_root() -> None:
    ca, root = await _ready_ca()
    issued = await ca.sign(
        identity.build_csr(identity.generate_key()),
        node_id="n",
        role="swarm-worker",
        cluster_id="c",
        expiry_seconds=100 * 365 * 86400.0,
    )
    assert identity.cert_not_after(issued.cert_pem) == identity.cert_not_after(root.cert_pem)


@pytest.mark.parametrize("field", ["node_id", "cluster_id", "expiry_seconds"])
async def test_bad_arguments(field: str) -> None:
    ca, _ = await _ready_ca()
    args: dict[str, object] = {
        "node_id": "n",
        "role": "swarm-worker",
        "cluster_id": "c",
        "expiry_seconds": 60,
    }
    args[field] = 0 if field == "expiry_seconds" else ""
    with pytest.raises(ValueError, match=field.split("_")[0]):
        await ca.sign(identity.build_csr(identity.generate_key()), **args)  # type: ignore[arg-type]


def test_entry_point_builds_the_provider(tmp_path: object) -> None:
    from importlib.metadata import entry_points

    from shoal.roles import PluginContext

    (ep,) = [e for e in entry_points(group="shoal.ca") if e.name == "internal"]
    module = ep.load()
    provider = module.shoal_ca_provider(context=PluginContext(role="ca", name="internal", state_dir=tmp_path))  # type: ignore[arg-type]
    assert isinstance(provider, InternalCA)
