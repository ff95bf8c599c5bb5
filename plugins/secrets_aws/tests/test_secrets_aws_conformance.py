"""The aws secrets backend passes the conformance suite against a real Secrets Manager API
(moto's server over verified HTTPS), and fails in one line when that server is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from shoal.roles.secrets import SecretFetchError
from shoal.testing.secrets import SecretsConformance, use_of
from shoal_secrets_aws import AwsSecrets, AwsSettings
from shoal_secrets_aws.settings import AwsOptionError
from shoal_secrets_aws.testing import TEST_ENV, MotoServer


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)


def provider_for(moto: MotoServer) -> AwsSecrets:
    return AwsSecrets(AwsSettings.from_options(moto.options()))


class TestAwsSecretsConformance(SecretsConformance):
    uses_cluster_material = True

    @pytest.fixture
    async def secrets(self, moto: MotoServer) -> AwsSecrets:
        return provider_for(moto)


async def test_value_lives_in_secrets_manager_not_in_the_reference(moto: MotoServer) -> None:
    provider = provider_for(moto)
    material = await provider.new_material()
    stored = await provider.store(material, "sid1", "db", b"v" * 70000)
    assert b"v" not in stored.split(b" ")[1] and stored.split(b" ")[2] == b"2"  # two parts
    name = stored.split(b" ")[1].decode()
    client = provider.settings.client()
    assert client.get_secret_value(SecretId=name)["SecretBinary"] == b"v" * 65536
    assert await provider.fetch(material, stored, use_of("sid1", "db")) == b"v" * 70000


async def test_missing_aws_secret_is_one_line(moto: MotoServer) -> None:
    provider = provider_for(moto)
    material = await provider.new_material()
    stored = await provider.store(material, "sid2", "gone", b"value")
    provider.settings.client().delete_secret(
        SecretId=stored.split(b" ")[1].decode(), ForceDeleteWithoutRecovery=True
    )
    with pytest.raises(
        SecretFetchError, match=r"^aws secrets backend at https://.*: secret gone .*not found"
    ):
        await provider.fetch(material, stored, use_of("sid2", "gone"))


async def test_backend_down_is_one_bounded_line(tmp_path: Path) -> None:
    server = MotoServer(tmp_path).start()
    provider = provider_for(server)
    material = await provider.new_material()
    stored = await provider.store(material, "sid3", "db", b"value")
    server.stop()
    with pytest.raises(SecretFetchError) as caught:
        await provider.fetch(material, stored, use_of("sid3", "db"))
    line = str(caught.value)
    assert "\n" not in line and line.startswith(f"aws secrets backend at {server.endpoint_url}"), line
    assert "cannot reach it" in line, line


async def test_untrusted_certificate_is_refused(moto: MotoServer) -> None:
    provider = AwsSecrets(
        AwsSettings.from_options({"aws.endpoint-url": moto.endpoint_url, "aws.timeout": "2"})
    )
    with pytest.raises(SecretFetchError, match=r"cannot reach it: .*(SSL|certificate)"):
        await provider.store(await provider.new_material(), "sid4", "db", b"value")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"aws.endpoint-url": "http://127.0.0.1:1"}, "in clear; use https://"),
        ({"aws.endpoint-url": "nonsense"}, "not a URL"),
        ({"aws.timeout": "-1"}, "between 0 and 300"),
        ({"aws.ca-bundle": "/no/such/file"}, "no such file"),
        ({"aws.colour": "blue"}, "unknown option secrets.aws.colour"),
        ({"aws.allow-http": "maybe"}, "give true or false"),
    ],
)
def test_bad_options_are_refused_in_one_line(options: dict[str, str], message: str) -> None:
    with pytest.raises(AwsOptionError, match=message) as caught:
        AwsSettings.from_options(options)
    assert "\n" not in str(caught.value)


def test_other_plugins_options_are_left_alone() -> None:
    settings = AwsSettings.from_options({"root": "/x", "aws.region": "eu-west-1", "aws.allow-http": "true"})
    assert settings.region == "eu-west-1"


async def test_no_region_is_a_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    provider = AwsSecrets(AwsSettings.from_options({}))
    with pytest.raises(
        SecretFetchError, match=r"no AWS region: give the daemon --plugin-opt secrets\.aws\.region"
    ):
        await provider.store(await provider.new_material(), "sid5", "db", b"value")
