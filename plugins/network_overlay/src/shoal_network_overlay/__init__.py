"""shoal's default network plugin: Swarm's networking on the kernel's own data paths.

The design (docs/architecture.md, "Networking"): VXLAN devices and a bridge per overlay
network, veth endpoints in task containers, the ingress routing mesh as nftables DNAT with
``numgen`` round robin in a table of shoal's own, discovery answered per network. This release
implements the contract's lifecycle (``start``, ``cleanup``, ``close``) and the routing mesh's
single-node data path (``ingress.IngressTable``) and the overlay devices
(``overlay.OverlayDevices``: bridge, VXLAN, veth endpoints), both tested in network namespaces,
but declares no
feature yet: the agent does not drive it, and tasks on other nodes are not reachable until the
overlay exists. Host-mode published ports need no network plugin (the runtime binds them).
"""

from shoal_network_overlay.provider import OverlayNetwork

__all__ = ["OverlayNetwork"]
