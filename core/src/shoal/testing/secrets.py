"""Conformance suite for secrets providers.

Use it from your plugin's tests::

    import pytest
    from shoal.testing.secrets import SecretsConformance

    class TestMySecrets(SecretsConformance):
        uses_cluster_material = True  # new_material() makes a fresh key; False if it returns b""

        @pytest.fixture
        async def secrets(self):
            provider = MySecrets(...)
            yield provider
            # clean up here

The suite stores values through ``store`` and reads them back through ``fetch`` under the
material ``new_material`` made, as the kernel does. A provider whose ``takes_value`` is False
(an external backend that only records references) overrides ``stored_value`` to put the
value where its backend will find it and return what ``store`` returned.

``uses_cluster_material`` says whether ``new_material`` makes new material each time (a key)
or always the same (``b""``): the check that other material is refused is collected only in
the first case (it is never skipped), and ``test_material_is_as_declared`` fails unless the
provider agrees.
"""

from __future__ import annotations

import secrets as _random
from typing import Any, ClassVar

import pytest

from shoal.roles.base import API_VERSIONS
from shoal.roles.secrets import SecretFetchError, SecretsProvider, SecretUse
from shoal.testing.applicability import collect_only_if, declared

#: Swarm's limit: a secret is under 500 KiB.
LARGEST_VALUE = 500 * 1024 - 1


def use_of(secret_id: str, name: str = "db-password") -> SecretUse:
    return SecretUse(
        secret_id=secret_id,
        secret_name=name,
        labels={"team": "conformance"},
        service_id="svc1",
        service_name="web",
        task_id="task1",
        node_id="node1",
    )


class SecretsConformance:
    """What every secrets provider must do. Set ``uses_cluster_material`` and override the
    ``secrets`` fixture."""

    #: Whether ``new_material`` makes new material each call (a key the provider needs to
    #: fetch), rather than always the same (``b""``: the provider uses none); written out here
    #: because pytest decides what to collect before any provider is built.
    uses_cluster_material: ClassVar[bool]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        uses = declared(cls, "uses_cluster_material", bool, "uses_cluster_material = True")
        collect_only_if(cls, SecretsConformance, "test_other_material_is_refused", uses)

    @pytest.fixture
    async def secrets(self) -> SecretsProvider:
        pytest.fail("override the `secrets` fixture to return your secrets provider")

    @pytest.fixture
    async def material(self, secrets: SecretsProvider) -> bytes:
        return await secrets.new_material()

    async def stored_value(
        self, secrets: SecretsProvider, material: bytes, secret_id: str, name: str, value: bytes
    ) -> bytes:
        """The at-rest form of ``value`` as the kernel would get it at ``secret create``."""
        return await secrets.store(material, secret_id, name, value)

    @staticmethod
    def new_secret_id() -> str:
        return "s" + _random.token_hex(12)

    # ------------------------------------------------------------------ declaration

    def test_declares_role_and_api_version(self, secrets: SecretsProvider) -> None:
        assert secrets.role == "secrets"
        assert secrets.api_version == API_VERSIONS["secrets"]
        assert isinstance(secrets.takes_value, bool)
        assert isinstance(secrets, SecretsProvider)

    async def test_material_is_bytes(self, material: bytes) -> None:
        assert isinstance(material, bytes)

    async def test_material_is_as_declared(self, secrets: SecretsProvider, material: bytes) -> None:
        """``uses_cluster_material`` chose whether the other-material check is collected."""
        really = await secrets.new_material() != material
        assert really == self.uses_cluster_material, (
            f"{type(self).__name__}.uses_cluster_material is {self.uses_cluster_material} but "
            f"new_material() {'made new material' if really else 'returned the same material twice'}: "
            f"set uses_cluster_material = {really}"
        )

    # ------------------------------------------------------------------ round trips

    @pytest.mark.parametrize("size", [1, 64, LARGEST_VALUE])
    async def test_fetch_returns_what_was_stored(
        self, secrets: SecretsProvider, material: bytes, size: int
    ) -> None:
        value = _random.token_bytes(size)
        secret_id = self.new_secret_id()
        stored = await self.stored_value(secrets, material, secret_id, "db-password", value)
        assert await secrets.fetch(material, stored, use_of(secret_id)) == value

    async def test_at_rest_form_does_not_contain_the_value(
        self, secrets: SecretsProvider, material: bytes
    ) -> None:
        value = b"conformance-plaintext-" + _random.token_hex(16).encode()
        secret_id = self.new_secret_id()
        stored = await self.stored_value(secrets, material, secret_id, "db-password", value)
        assert value not in stored
        assert value[-16:] not in stored, "a piece of the value is visible at rest"

    async def test_two_secrets_with_one_value_are_stored_differently(
        self, secrets: SecretsProvider, material: bytes
    ) -> None:
        # Equal at-rest forms would tell a reader of the store which secrets share a value.
        value = b"same value"
        first = await self.stored_value(secrets, material, self.new_secret_id(), "a", value)
        second = await self.stored_value(secrets, material, self.new_secret_id(), "b", value)
        assert first != second

    async def test_fetch_serves_each_use(self, secrets: SecretsProvider, material: bytes) -> None:
        # The leader fetches once per task that needs the value: the same answer every time.
        secret_id = self.new_secret_id()
        stored = await self.stored_value(secrets, material, secret_id, "db-password", b"v")
        for _ in range(3):
            assert await secrets.fetch(material, stored, use_of(secret_id)) == b"v"

    # ------------------------------------------------------------------ refusals

    async def test_altered_form_is_refused(self, secrets: SecretsProvider, material: bytes) -> None:
        secret_id = self.new_secret_id()
        stored = await self.stored_value(secrets, material, secret_id, "db-password", b"value")
        altered = bytearray(stored)
        altered[-1] ^= 0x01
        with pytest.raises(SecretFetchError):
            await secrets.fetch(material, bytes(altered), use_of(secret_id))

    async def test_form_of_another_secret_is_refused(self, secrets: SecretsProvider, material: bytes) -> None:
        # A store writer who copies secret A's at-rest form into secret B must not make B's
        # tasks receive A's value.
        stored = await self.stored_value(secrets, material, self.new_secret_id(), "a", b"value of a")
        with pytest.raises(SecretFetchError):
            await secrets.fetch(material, stored, use_of(self.new_secret_id(), "b"))

    async def test_other_material_is_refused(self, secrets: SecretsProvider, material: bytes) -> None:
        other = await secrets.new_material()
        assert other != material, "uses_cluster_material is True but new_material() made the same twice"
        secret_id = self.new_secret_id()
        stored = await self.stored_value(secrets, material, secret_id, "db-password", b"value")
        with pytest.raises(SecretFetchError):
            await secrets.fetch(other, stored, use_of(secret_id))

    async def test_garbage_is_refused_in_one_line(self, secrets: SecretsProvider, material: bytes) -> None:
        with pytest.raises(SecretFetchError) as caught:
            await secrets.fetch(material, b"\x00not a stored secret", use_of(self.new_secret_id()))
        assert "\n" not in str(caught.value) and str(caught.value)
