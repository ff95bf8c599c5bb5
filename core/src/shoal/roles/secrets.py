"""The secrets role: how secret values are sealed at rest and opened for delivery.

The kernel stores what ``seal`` returns in the Secret object (so it is replicated by the
store) and calls ``open`` only on a manager that sends the value to an agent whose task uses it.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable


@runtime_checkable
class SecretsProvider(Protocol):
    """Seals and opens secret values."""

    role: ClassVar[str]  # "secrets"
    api_version: ClassVar[int]  # 1

    async def seal(self, secret_id: str, value: bytes) -> bytes:
        """Return the at-rest form of ``value``; it must not reveal ``value``."""

    async def open(self, secret_id: str, sealed: bytes) -> bytes:
        """Return the value ``seal`` was given. Raises ``ValueError`` if ``sealed`` was tampered with."""
