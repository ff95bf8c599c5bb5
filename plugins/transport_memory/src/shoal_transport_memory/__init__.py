"""shoal's in-process transport: deterministic whole-cluster simulation with injected faults."""

from shoal_transport_memory.clock import VirtualTimeLoop
from shoal_transport_memory.network import NETWORK, MemoryNetwork
from shoal_transport_memory.server import MemoryServer
from shoal_transport_memory.transport import MemoryTransport

__all__ = ["NETWORK", "MemoryNetwork", "MemoryServer", "MemoryTransport", "VirtualTimeLoop"]
