"""Names of everything the provider makes on a node, each carrying the node's digest.

Several shoal nodes may share one network namespace (the tests' hollow nodes, a manager and a
worker on one machine), so a device or table named only after the network would collide: every
name carries a short digest of the node ID, which also tells ``cleanup`` and ``start`` exactly
which devices and rules are this node's (and never another node's or the host's own). Linux
device names have 15 characters at most; nftables identifiers letters, digits and ``_``.
"""

from __future__ import annotations

import hashlib

#: Characters of the node digest in every name (16**5: about a million distinct nodes).
DIGEST_LENGTH = 5
BRIDGE, VXLAN, ENDPOINT, PEER = "shb", "shv", "she", "shp"
#: The table shoal writes inside a task's network namespace (VIP load balancing); the namespace
#: belongs to one container, so it needs no node digest.
VIP_TABLE = "shoal_vip"


def node_digest(node_id: str) -> str:
    return hashlib.sha256(node_id.encode()).hexdigest()[:DIGEST_LENGTH]


def _checked(name: str) -> str:
    assert len(name) <= 15, name
    return name


def bridge_name(digest: str, vni: int) -> str:
    """``shb<digest><vni in hex>``: 14 characters for the largest VXLAN ID."""
    return _checked(f"{BRIDGE}{digest}{vni:x}")


def vxlan_name(digest: str, vni: int) -> str:
    return _checked(f"{VXLAN}{digest}{vni:x}")


def _endpoint_digest(task_id: str, network_id: str) -> str:
    return hashlib.sha256(f"{task_id}/{network_id}".encode()).hexdigest()[:7]


def endpoint_name(digest: str, task_id: str, network_id: str) -> str:
    """The host end of a task's veth on a network (stable for the pair, 15 characters)."""
    return _checked(f"{ENDPOINT}{digest}{_endpoint_digest(task_id, network_id)}")


def peer_name(digest: str, task_id: str, network_id: str) -> str:
    """The container end's name until it is moved and renamed ``ethN`` in the container."""
    return _checked(f"{PEER}{digest}{_endpoint_digest(task_id, network_id)}")


def table_name(digest: str) -> str:
    """The node's own nftables table (ingress DNAT, masquerade, VXLAN source filter)."""
    return f"shoal_{digest}"


def is_ours(device: str, digest: str) -> bool:
    """A device this node made (any of the four kinds)."""
    return any(device.startswith(kind + digest) for kind in (BRIDGE, VXLAN, ENDPOINT, PEER))


def firewall_comment(digest: str) -> str:
    """The comment on this node's DOCKER-USER rules: how cleanup finds exactly them."""
    return f"shoal-{digest}"
