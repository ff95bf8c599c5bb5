"""shoal network plugin ``fake``: the network role's calls recorded in memory, nothing on the host.

The default ``overlay`` plugin makes nftables tables and devices on the node: right for a
real node, wrong for a test that runs a whole cluster in one process or for a thousand hollow
nodes on one machine. This one declares every feature, so the managers allocate as they would,
and keeps what it was told (networks, endpoints, published ports, discovery records) for tests
to read.
"""

from shoal_network_fake.provider import FakeNetwork

__all__ = ["FakeNetwork"]
