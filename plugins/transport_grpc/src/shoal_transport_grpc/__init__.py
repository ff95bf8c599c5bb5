"""shoal's default transport: node-to-node RPC over gRPC (grpc.aio) with mutual TLS."""

from shoal_transport_grpc import engine  # noqa: F401  (first: it must run before grpc is imported)
from shoal_transport_grpc.transport import GrpcTransport

__all__ = ["GrpcTransport"]
