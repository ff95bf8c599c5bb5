"""Entry point module for ``shoal.store`` = ``etcd``: the factory hook only."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_store_etcd.provider import EtcdStore

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = EtcdStore


@hookimpl
def shoal_store_provider(context: PluginContext) -> EtcdStore:
    """Build the etcd store from the ``store.*`` plugin options (endpoints, mutual TLS files)."""
    return EtcdStore.from_context(context)
