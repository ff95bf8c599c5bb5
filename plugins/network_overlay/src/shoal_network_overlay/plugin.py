"""Entry point ``overlay`` in ``shoal.network``: builds the overlay network provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_network_overlay.provider import OverlayNetwork

#: Read by ``shoal plugin ls`` and the control API (its ``features``) without building a provider.
PROVIDER_CLASS = OverlayNetwork


@hookimpl
def shoal_network_provider(context: PluginContext) -> OverlayNetwork:
    """Builds without touching the host; the node ID and state directory let ``cleanup`` find
    this node's devices even when the provider never started in this process."""
    return OverlayNetwork(node_id=context.node_id, state_dir=context.state_dir)
