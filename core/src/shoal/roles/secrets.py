"""The secrets role: where a secret's value lives at rest and how the leader gets it back.

A secret's value never sits in the cluster state in clear. ``secret create`` hands the value to
the provider named by the secret's driver (the cluster's secrets plugin when none is given);
``store`` returns the at-rest form the kernel keeps in the Secret object (a sealed value, or a
reference into an external secret manager), replicated by the store. When the leader builds
the assignment of a task that uses the secret, it calls ``fetch`` with that form and sends the
value to that task's node only, inside mutual TLS.

A provider that needs cluster-wide material (the internal plugin's sealing key) makes it with
``new_material``: the kernel keeps it in the cluster object (``Cluster.secrets_material``,
never returned by the API) and passes it to every ``store`` and ``fetch``, so a provider keeps
no state of its own and every manager can serve as leader.

API version 2 (version 1 had ``seal``/``open`` and nothing loaded it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable


class SecretFetchError(Exception):
    """The value cannot be had: tampered or foreign at-rest form, backend down, secret gone.

    The message is one line naming the backend and the reason; the kernel shows it as the
    task's error.
    """


@dataclass(frozen=True)
class SecretUse:
    """Who a value is fetched for (Swarm's secret driver request): an external backend may
    decide per service or node, or log the access. ``task_id`` is empty outside a task."""

    secret_id: str
    secret_name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    service_id: str = ""
    service_name: str = ""
    task_id: str = ""
    node_id: str = ""


@runtime_checkable
class SecretsProvider(Protocol):
    """Keeps secret values at rest and gives them back to the leader."""

    role: ClassVar[str]  # "secrets"
    api_version: ClassVar[int]  # 2

    #: Whether ``secret create`` with this driver takes a value (an external backend that only
    #: records a reference to a secret it already holds says False).
    takes_value: ClassVar[bool]

    async def new_material(self) -> bytes:
        """Cluster-wide material this provider needs for ``store``/``fetch`` (a key), or ``b""``.

        Called once per swarm, by the leader, before the first secret of this driver is
        stored; the kernel keeps the result in the cluster object and never shows it.
        """

    async def store(self, material: bytes, secret_id: str, name: str, value: bytes) -> bytes:
        """The at-rest form of ``value`` for secret ``secret_id`` (immutable: called once).

        It must not contain ``value`` in clear. An external backend may return a reference.
        Raises ``SecretFetchError`` (one line) when the backend refuses.
        """

    async def fetch(self, material: bytes, stored: bytes, use: SecretUse) -> bytes:
        """The value behind ``stored`` (what ``store`` returned for ``use.secret_id``).

        Raises ``SecretFetchError`` if ``stored`` was altered, belongs to another secret, was
        made under other material, or the backend cannot answer (after a bounded wait).
        """
