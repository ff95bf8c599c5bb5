"""Entry point ``grpc`` in ``shoal.transport``: builds the gRPC transport provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_transport_grpc.transport import DEFAULT_SERVER_NAME, GrpcTransport

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = GrpcTransport


@hookimpl
def shoal_transport_provider(context: PluginContext) -> GrpcTransport:
    """Option ``transport.server_name``: the TLS name clients expect (default ``swarm-manager``)."""
    return GrpcTransport(server_name=context.options.get("server_name", DEFAULT_SERVER_NAME))
