"""The envelope the Raft store's RPC methods carry between managers.

One format for the three methods (``peernet``): who sends (member ID, node ID, address), to
whom, the encoded Raft message batches (``codec``), and optionally the sender's member book
(``peers``). A fixed little-endian layout, cheap to build per commit:

    u64 from_member, u64 to_member,
    str from_addr, str from_node,            (str = u16 length + UTF-8)
    u16 n_peers,   n x (u64 member_id, str node_id, str addr),
    u32 n_batches, n x (u32 length + bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from shoal_store_raft.peers import Peer

_IDS = struct.Struct("<QQ")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


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


def _str(value: str) -> bytes:
    raw = value.encode()
    return _U16.pack(len(raw)) + raw


def encode(env: Envelope) -> bytes:
    parts = [_IDS.pack(env.from_member, env.to_member), _str(env.from_addr), _str(env.from_node)]
    parts.append(_U16.pack(len(env.peers)))
    for peer in env.peers:
        parts += [_U64.pack(peer.member_id), _str(peer.node_id), _str(peer.addr)]
    parts.append(_U32.pack(len(env.batches)))
    for batch in env.batches:
        parts += [_U32.pack(len(batch)), batch]
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.off = 0

    def take(self, size: int) -> memoryview:
        end = self.off + size
        if end > len(self.data):
            raise WireError("truncated raft store envelope")
        chunk = self.data[self.off : end]
        self.off = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    def string(self) -> str:
        (size,) = self.unpack(_U16)
        try:
            return str(self.take(size), "utf-8")
        except UnicodeDecodeError:
            raise WireError("raft store envelope: a name is not UTF-8") from None


def decode(data: bytes) -> Envelope:
    """Parse an envelope; raises ``WireError`` for anything else."""
    r = _Reader(data)
    from_member, to_member = r.unpack(_IDS)
    env = Envelope(from_member, to_member, r.string(), r.string())
    (count,) = r.unpack(_U16)
    for _ in range(count):
        (member_id,) = r.unpack(_U64)
        env.peers.append(Peer(member_id, r.string(), r.string()))
    (count,) = r.unpack(_U32)
    for _ in range(count):
        (size,) = r.unpack(_U32)
        env.batches.append(bytes(r.take(size)))
    if r.off != len(r.data):
        raise WireError("raft store envelope: trailing bytes")
    return env
