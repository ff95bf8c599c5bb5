"""Entry point ``internal`` in ``shoal.secrets``: builds the built-in secrets provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_secrets_internal.sealing import InternalSecrets

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = InternalSecrets


@hookimpl
def shoal_secrets_provider(context: PluginContext) -> InternalSecrets:
    """The internal backend takes no options: its key comes from the cluster object."""
    return InternalSecrets()
