"""shoal's default network plugin: Swarm's networking on the kernel's own data paths.

All three features of the network role (docs/architecture.md, "Networking"): overlay networks
(a bridge and a VXLAN device per network, veth endpoints in task containers), the ingress
routing mesh (nftables DNAT with ``numgen`` round robin in the node's own table, masquerade into
the ingress network) and service discovery (a resolver at 127.0.0.11 inside each task's
namespace, VIPs as nftables DNAT there). Host-mode published ports need no network plugin (the
runtime binds them).
"""

from shoal_network_overlay.provider import OverlayNetwork

__all__ = ["OverlayNetwork"]
