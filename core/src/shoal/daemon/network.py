"""The node's network provider over the daemon's life: started with the swarm, closed when the
daemon stops (its data path stays, a restart adopts it), cleaned up when the node leaves.

The provider is the swarm's network plugin (``cluster.plugins.network``, recorded in
``state.json`` by init and join). A provider that raises in a call the kernel makes is named
in one ``PluginError`` line, like every other plugin.
"""

from __future__ import annotations

import logging

from shoal.loader import PluginError, PluginLoader
from shoal.roles.base import PluginContext
from shoal.roles.network import NetworkProvider, NodeNetwork

log = logging.getLogger(__name__)


class NodeNetworkLife:
    """Holds the provider between ``start`` and ``close``/``cleanup``."""

    def __init__(self) -> None:
        self.provider: NetworkProvider | None = None
        self._loader: PluginLoader | None = None

    async def start(self, loader: PluginLoader, context: PluginContext, node: NodeNetwork) -> None:
        """Build the provider and let it prepare the node (idempotent, adopts a previous run)."""
        provider = loader.provider("network", context)
        try:
            await provider.start(node)
        except Exception as exc:
            raise loader.failure("network", "start", exc) from exc
        self.provider, self._loader = provider, loader

    async def close(self) -> None:
        """The daemon stops or restarts its swarm part: release, leave the data path."""
        provider, self.provider = self.provider, None
        if provider is not None:
            try:
                await provider.close()
            except Exception as exc:  # stopping must go on: say which plugin failed
                log.error("%s", self._failure("close", exc))

    async def cleanup(self, loader: PluginLoader, context: PluginContext) -> None:
        """The node leaves the swarm: remove everything the provider made on it, whether or not
        it is running now (a node that never started its swarm part can still leave). A failure
        is logged with the plugin's name: leaving goes on (the identity must still go)."""
        self._loader = self._loader or loader
        try:
            provider = self.provider or loader.provider("network", context)
            self.provider = provider
            await provider.cleanup()
        except PluginError as exc:
            log.error("%s", exc)
        except Exception as exc:
            log.error("%s", self._failure("cleanup", exc))
        await self.close()

    def _failure(self, method: str, exc: Exception) -> PluginError:
        if self._loader is None:
            return PluginError(f"network plugin failed in {method}: {exc}")
        return self._loader.failure("network", method, exc)
