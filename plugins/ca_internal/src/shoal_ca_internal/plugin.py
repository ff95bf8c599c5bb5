"""Entry point ``internal`` in ``shoal.ca``: builds the built-in CA provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_ca_internal.ca import InternalCA

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = InternalCA


@hookimpl
def shoal_ca_provider(context: PluginContext) -> InternalCA:
    """The internal CA takes no options: the root comes from the cluster object."""
    return InternalCA()
