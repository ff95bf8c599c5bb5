"""Entry point ``memory`` in ``shoal.transport``: builds the in-process transport provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_transport_memory.transport import DEFAULT_SERVER_NAME, MemoryTransport

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = MemoryTransport


@hookimpl
def shoal_transport_provider(context: PluginContext) -> MemoryTransport:
    """Options: ``transport.server_name`` (TLS name expected of servers, default ``swarm-manager``),
    ``transport.name`` (this node's address for partitions before it serves). The network is
    the process-wide ``shoal_transport_memory.NETWORK``."""
    return MemoryTransport(
        server_name=context.options.get("server_name", DEFAULT_SERVER_NAME),
        name=context.options.get("name", ""),
    )
