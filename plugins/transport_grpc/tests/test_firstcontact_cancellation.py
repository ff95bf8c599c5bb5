"""A first contact whose caller is cancelled ends cancelled, whatever the loop turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from shoal.testing.cancelling import cancel_after_turns
from shoal_transport_grpc import firstcontact


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    """A TCP listener that accepts and never answers a TLS hello."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()


@pytest.mark.parametrize("turns", range(10))
async def test_a_first_contact_cancelled_as_it_connects_ends_cancelled(silent: str, turns: int) -> None:
    """A caller (a join, a call with a deadline) is cancelled while the TCP connection opens.
    With ``asyncio.wait_for`` (Python 3.11) a cancellation arriving as the connection did was
    swallowed: the cancelled caller went on to wait for a TLS handshake (here one that never
    comes, until the 5 s timeout)."""
    contact = asyncio.create_task(firstcontact.presented_root(silent, 5))
    done = await cancel_after_turns(contact, turns)
    assert done, f"the first contact cancelled after {turns} loop turns went on"
    assert contact.cancelled()
