"""Entry point module for ``shoal.store`` = ``raft``: the factory hook only."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_store_raft.provider import RaftStore

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = RaftStore


@hookimpl
def shoal_store_provider(context: PluginContext) -> RaftStore:
    """Build the Raft store over ``context.state_dir`` with the ``store.*`` plugin options."""
    return RaftStore.from_context(context)
