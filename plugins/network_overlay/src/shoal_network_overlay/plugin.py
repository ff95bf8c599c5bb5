"""Entry point ``overlay`` in ``shoal.network``: builds the overlay network provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_network_overlay.provider import OverlayNetwork

#: Read by ``shoal plugin ls`` and the control API (its ``features``) without building a provider.
PROVIDER_CLASS = OverlayNetwork


@hookimpl
def shoal_network_provider(context: PluginContext) -> OverlayNetwork:
    """The provider takes no options yet; it builds without touching the host."""
    return OverlayNetwork()
