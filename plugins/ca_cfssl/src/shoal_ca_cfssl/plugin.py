"""Entry point ``cfssl`` in ``shoal.ca``: builds the external (cfssl) CA provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_ca_cfssl.ca import CfsslCA

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = CfsslCA


@hookimpl
def shoal_ca_provider(context: PluginContext) -> CfsslCA:
    """The URLs come from the cluster (``configure``); the client identity from ``node_tls``."""
    return CfsslCA(state_dir=context.state_dir, node_tls=context.node_tls)
