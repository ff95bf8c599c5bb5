"""Who the other Raft members are: member ID -> (node ID, address), kept in ``peers.json``.

Raft names members by random 63-bit IDs; the kernel names managers by node ID and address.
This book maps one to the other for the Raft store alone (the kernel never sees a member ID).
It learns an entry when the leader adds a manager (``add_member`` asks the new member for
its ID), from the sender fields of every message that arrives, and from the whole book that
members pass each other (``wire.Envelope.peers``), so a follower that has to campaign knows
where the other voters are. It is persisted because a restarted member needs the addresses
before anyone has talked to it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from shoal_store_raft.files import atomic_write

log = logging.getLogger("shoal.store.raft")

PEERS_FILE = "peers.json"


@dataclass(frozen=True)
class Peer:
    member_id: int
    node_id: str
    addr: str


class PeerBook:
    """The member table of one Raft member (see the module docstring)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._peers: dict[int, Peer] = {}
        #: Bumped on every change, so senders know when to pass the book on again.
        self.version = 0
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
            for key, value in doc.items():
                member_id = int(key, 16)
                self._peers[member_id] = Peer(member_id, str(value.get("node_id", "")), str(value["addr"]))
        except FileNotFoundError:
            return
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            # Only hints: the leader passes the book on again at its next message.
            log.warning("ignoring unreadable %s: %s", path, exc)
            self._peers.clear()

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {f"{p.member_id:016x}": {"node_id": p.node_id, "addr": p.addr} for p in self._peers.values()}
        atomic_write(self.path, json.dumps(doc, sort_keys=True).encode())

    def learn(self, member_id: int, node_id: str, addr: str) -> bool:
        """Record where ``member_id`` listens (an empty field keeps what was known); returns
        whether anything changed."""
        if not member_id:
            return False
        old = self._peers.get(member_id)
        new = Peer(member_id, node_id or (old.node_id if old else ""), addr or (old.addr if old else ""))
        if new == old:
            return False
        self._peers[member_id] = new
        self.version += 1
        self._save()
        return True

    def learn_all(self, peers: list[Peer]) -> None:
        changed = False
        for peer in peers:
            old = self._peers.get(peer.member_id)
            new = Peer(
                peer.member_id,
                peer.node_id or (old.node_id if old else ""),
                peer.addr or (old.addr if old else ""),
            )
            if new != old:
                self._peers[peer.member_id] = new
                changed = True
        if changed:
            self.version += 1
            self._save()

    def keep_only(self, member_id: int) -> None:
        """Forget everyone but ``member_id`` (``--force-new-cluster``: the others are gone)."""
        kept = {k: v for k, v in self._peers.items() if k == member_id}
        if kept != self._peers:
            self._peers = kept
            self.version += 1
            self._save()

    def get(self, member_id: int) -> Peer | None:
        return self._peers.get(member_id)

    def address(self, member_id: int) -> str:
        peer = self._peers.get(member_id)
        return peer.addr if peer is not None else ""

    def by_node(self, node_id: str) -> list[int]:
        """Member IDs recorded for ``node_id`` (a node demoted and promoted again has had
        several)."""
        return [p.member_id for p in self._peers.values() if node_id and p.node_id == node_id]

    def all(self) -> list[Peer]:
        return list(self._peers.values())
