"""The raft store's own pieces of networking: the envelope format, the member book, and what
the store tells the kernel when the others say it is no longer a member."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from shoal.roles.store import MemberRemoved
from shoal.testing.store import RecordingMachine
from shoal_store_raft import wire
from shoal_store_raft.peers import Peer, PeerBook
from shoal_store_raft.provider import RaftStore
from shoal_store_raft.wire import Envelope, WireError


def test_envelope_round_trip() -> None:
    env = Envelope(
        from_member=7,
        to_member=(1 << 63) - 1,
        from_addr="10.0.0.1:2377",
        from_node="nodé-1",
        peers=[Peer(7, "nodé-1", "10.0.0.1:2377"), Peer(9, "", "")],
        batches=[b"", b"x" * 70000, b"\x00\xff"],
    )
    assert wire.decode(wire.encode(env)) == env
    assert wire.decode(wire.encode(Envelope())) == Envelope()


@pytest.mark.parametrize("cut", [1, 16, 20, -1])
def test_truncated_or_padded_envelopes_are_refused(cut: int) -> None:
    raw = wire.encode(Envelope(from_member=1, from_addr="a:1", batches=[b"abc"]))
    with pytest.raises(WireError):
        wire.decode(raw[:cut])
    with pytest.raises(WireError):
        wire.decode(raw + b"\x00")


def test_book_keeps_what_it_learns_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    book = PeerBook(path)
    assert book.learn(5, "n5", "h5:1")
    version = book.version
    assert not book.learn(5, "n5", "h5:1")  # nothing new: no write, no version bump
    assert book.version == version
    assert book.learn(5, "", "h5:2")  # an empty field keeps what was known
    assert book.get(5) == Peer(5, "n5", "h5:2")
    book.learn_all([Peer(6, "n6", "h6:1"), Peer(5, "n5", "h5:2")])
    again = PeerBook(path)
    assert {p.member_id: (p.node_id, p.addr) for p in again.all()} == {5: ("n5", "h5:2"), 6: ("n6", "h6:1")}
    assert again.by_node("n6") == [6] and again.by_node("") == []
    again.keep_only(6)
    assert [p.member_id for p in PeerBook(path).all()] == [6]


def test_an_unreadable_book_is_only_hints(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    path.write_text("{not json")
    assert PeerBook(path).all() == []


def test_leadership_raises_member_removed_when_the_others_refuse_it(tmp_path: Path) -> None:
    async def body() -> None:
        store = RaftStore(tmp_path / "raft")
        await store.start(RecordingMachine(), bootstrap=True)
        try:
            events = store.leadership()
            assert await anext(events) is True
            store._on_removed("node x: this manager is no longer a member")
            with pytest.raises(MemberRemoved, match="no longer a member"):
                await asyncio.wait_for(anext(events), 5)
            later = store.leadership()  # a subscriber after the fact hears it too
            assert await anext(later) in (True, False)
            with pytest.raises(MemberRemoved):
                await asyncio.wait_for(anext(later), 5)
        finally:
            await store.stop()

    asyncio.run(body())
