"""One hollow node: a joined identity, the real agent, a fake runtime.

Each node describes itself differently (``profile``): its own hostname, engine labels (a zone
of three, a rack of twenty) and resources (2-16 CPUs, 4-32 GiB), so that the scheduler, the
constraints and the placement preferences see a realistic, uneven cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from shoal import identity
from shoal.agent.agent import Agent
from shoal.hollow.join import Joined, join
from shoal.loader import PluginLoader
from shoal.roles.base import PluginContext
from shoal.roles.transport import TLSMaterial, TransportProvider

log = logging.getLogger("shoal.hollow")

#: The runtime plugin a hollow node's agent drives (no engine, containers as state).
RUNTIME_PLUGIN = "fake"
CERTS_DIR = "certs"
_CPUS = (2, 4, 8, 16)
_GIB = 1024**3


@dataclass(frozen=True)
class Profile:
    """How one hollow node describes itself to the managers."""

    hostname: str
    cpus: int
    memory_bytes: int
    labels: dict[str, str] = field(default_factory=dict)

    def runtime_options(self) -> dict[str, str]:
        """The fake runtime's ``describe`` answers (``--plugin-opt runtime.*``)."""
        return {
            "hostname": self.hostname,
            "cpus": str(self.cpus),
            "memory_bytes": str(self.memory_bytes),
            "labels": ",".join(f"{key}={value}" for key, value in self.labels.items()),
        }


def profile(index: int, prefix: str = "hollow") -> Profile:
    """The ``index``-th node's distinct description."""
    return Profile(
        hostname=f"{prefix}-{index:05d}",
        cpus=_CPUS[index % len(_CPUS)],
        memory_bytes=(4 << (index % 4)) * _GIB,
        labels={"hollow": "true", "zone": f"zone-{index % 3}", "rack": f"rack-{index % 20}"},
    )


class HollowNode:
    """Joins (or reuses the certificate of an earlier run in ``state_dir``), then runs an agent."""

    def __init__(
        self,
        *,
        node_profile: Profile,
        state_dir: Path,
        transport: TransportProvider,
        loader: PluginLoader,
        managers: list[str],
        runtime_options: dict[str, str] | None = None,
    ) -> None:
        self.profile = node_profile
        self.state_dir = state_dir
        self.transport = transport
        self.loader = loader
        self.managers = list(managers)
        self.runtime_options = {**node_profile.runtime_options(), **(runtime_options or {})}
        self.joined: Joined | None = None
        self.agent: Agent | None = None

    @property
    def node_id(self) -> str:
        return self.joined.node_id if self.joined is not None else ""

    def _tls(self) -> TLSMaterial:
        assert self.joined is not None
        return self.joined.tls()

    async def join(self, token: str) -> None:
        certs = self.state_dir / CERTS_DIR
        if (certs / identity.CERT_FILE).exists():
            creds = identity.load_credentials(certs)
            peer = identity.parse_identity(creds.cert_pem)
            self.joined = Joined(node_id=peer.node_id, cluster_id=peer.cluster_id, credentials=creds)
            return
        self.joined = await join(self.transport, self.managers[0], token)
        identity.write_credentials(certs, self.joined.credentials)

    async def start(self) -> None:
        """The agent, with this node's own fake runtime; its session opens in the background."""
        assert self.joined is not None, "join first"
        context = PluginContext(
            role="runtime",
            name=RUNTIME_PLUGIN,
            state_dir=self.state_dir / "plugins" / f"runtime-{RUNTIME_PLUGIN}",
            options=self.runtime_options,
            node_id=self.joined.node_id,
        )
        runtime = self.loader.provider("runtime", context)
        self.agent = Agent(
            node_id=self.joined.node_id,
            state_dir=self.state_dir,
            runtime=runtime,
            runtime_name=RUNTIME_PLUGIN,
            transport=self.transport,
            tls=self._tls,
            managers=self.managers,
            hostname=self.profile.hostname,
        )
        await self.agent.start()

    @property
    def connected(self) -> bool:
        return self.agent is not None and self.agent.connected.is_set()

    async def stop(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
            self.agent = None
