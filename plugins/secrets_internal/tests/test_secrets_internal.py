"""The internal secrets backend passes the conformance suite."""

from __future__ import annotations

import pytest
from shoal.testing.secrets import SecretsConformance
from shoal_secrets_internal import InternalSecrets


class TestInternalSecretsConformance(SecretsConformance):
    uses_cluster_material = True

    @pytest.fixture
    async def secrets(self) -> InternalSecrets:
        return InternalSecrets()
