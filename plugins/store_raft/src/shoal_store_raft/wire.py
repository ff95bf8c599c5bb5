"""The envelope the Raft store's RPC methods carry between managers.

One format for the three methods (``peernet``): who sends (member ID, node ID, address), to
whom, the encoded Raft message batches (``codec``), and optionally the sender's member book
(``peers``). A fixed little-endian layout, cheap to build per commit:

    u64 from_member, u64 to_member, u16 len(from_addr), u16 len(from_node), from_addr, from_node,
    u16 n_peers,   n x (u64 member_id, u16 len(node_id), node_id, u16 len(addr), addr),
    u32 n_batches, n x (u32 length, bytes)              (names are UTF-8)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from shoal_store_raft.peers import Peer

_HEAD = struct.Struct("<QQHH")  # from_member, to_member, then the lengths of the two names
_PEER = struct.Struct("<QH")  # member_id, length of node_id
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class WireError(ValueError):
    """Bytes that are not an envelope (truncated, or not from a Raft store)."""


@dataclass
class Envelope:
    from_member: int = 0
    to_member: int = 0
    from_addr: str = ""
    from_node: str = ""
    peers: list[Peer] = field(default_factory=list)
    batches: list[bytes] = field(default_factory=list)


def encode(env: Envelope) -> bytes:
    """Written per message on the commit path, hence flat code with precompiled structs."""
    addr, node = env.from_addr.encode(), env.from_node.encode()
    parts = [_HEAD.pack(env.from_member, env.to_member, len(addr), len(node)), addr, node]
    parts.append(_U16.pack(len(env.peers)))
    for peer in env.peers:
        peer_node, peer_addr = peer.node_id.encode(), peer.addr.encode()
        parts += [_PEER.pack(peer.member_id, len(peer_node)), peer_node, _U16.pack(len(peer_addr)), peer_addr]
    parts.append(_U32.pack(len(env.batches)))
    for batch in env.batches:
        parts += [_U32.pack(len(batch)), batch]
    return b"".join(parts)


def decode(data: bytes) -> Envelope:
    """Parse an envelope; raises ``WireError`` for anything else."""
    try:
        from_member, to_member, addr_len, node_len = _HEAD.unpack_from(data, 0)
        off = _HEAD.size
        addr = data[off : off + addr_len].decode()
        off += addr_len
        node = data[off : off + node_len].decode()
        off += node_len
        (count,) = _U16.unpack_from(data, off)
        off += 2
        peers = []
        for _ in range(count):
            member_id, size = _PEER.unpack_from(data, off)
            off += _PEER.size
            peer_node = data[off : off + size].decode()
            off += size
            (size,) = _U16.unpack_from(data, off)
            off += 2
            peers.append(Peer(member_id, peer_node, data[off : off + size].decode()))
            off += size
        (count,) = _U32.unpack_from(data, off)
        off += 4
        batches = []
        for _ in range(count):
            (size,) = _U32.unpack_from(data, off)
            off += 4
            batches.append(data[off : off + size])
            off += size
    except struct.error:
        raise WireError("truncated raft store envelope") from None
    except UnicodeDecodeError:
        raise WireError("raft store envelope: a name is not UTF-8") from None
    if off != len(data):  # a short slice above leaves ``off`` past the end
        raise WireError("raft store envelope: truncated or trailing bytes")
    return Envelope(from_member, to_member, addr, node, peers, batches)
