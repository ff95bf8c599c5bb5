"""A follower passes the leader's ``service ps`` reply in pieces on as the leader writes it.

A CLI talking to a follower asks it as it asks the leader (``compact`` and ``pieces``); the
follower forwards the call. It parsed the leader's 16.5 MB reply of 100,000 rows and encoded
it again for its CLI (~0.5 s of its CPU the CLI waited for), and the marks after each piece
were lost on the way, so the CLI parsed the whole line at its end. Then the leader's text was
written as it came, but only once the whole of it had come (one unary reply): the CLI got
nothing while the leader built its rows. Now the leader's parts come over a stream
(``rpc.CONTROL_STREAM``) and each goes on to the CLI as it arrives (issue 18 item 2).
In-process cluster: real daemons, raft store, memory transport.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from shoal import rpc, yieldingjson
from shoal.daemon.localapi import APIError
from shoal.manager import controlrelay, tasklist
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial
from shoal.testing.cluster import InProcessCluster

REPLICAS = 5


async def _written(result: object) -> bytes:
    return b"".join([part async for part in yieldingjson.line_parts({"result": result})])


async def test_a_follower_passes_the_leader_s_pieces_on_as_written(tmp_path: Path) -> None:
    async with InProcessCluster(tmp_path, managers=3, workers=1) as cluster:
        await cluster.call("service.create", name="web", image="app:1", replicas=REPLICAS)
        await cluster.wait_for_running("web", REPLICAS)
        leader = cluster.leader()
        assert leader is not None
        follower = next(m for m in cluster.managers() if m is not leader)
        params = {"services": ["web"], "compact": True, "pieces": True}
        relayed = await follower.call("service.ps", **params)
        assert isinstance(relayed, controlrelay.Relayed)
        line = await _written(relayed)
        assert line.count(b"\r") == 2  # after the head and after the one piece, as written
        from_leader = json.loads(await _written(await leader.call("service.ps", **params)))
        from_follower = json.loads(line)
        assert from_follower["result"].pop("now") <= from_leader["result"].pop("now")
        assert from_follower == from_leader and len(from_leader["result"]["rows"]) == REPLICAS
        # Without pieces (an older CLI, in-process callers): a parsed value, as before.
        whole = await follower.call("service.ps", services=["web"], compact=True)
        assert isinstance(whole, dict) and len(whole["rows"]) == REPLICAS


async def test_a_follower_s_cli_gets_the_leader_s_first_piece_while_the_leader_builds_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader holds its listing after its first piece of rows: through the follower, that
    piece comes all the same (as one unary reply, nothing came before the last)."""
    gate = asyncio.Event()
    build = tasklist.StreamedRows.parts

    async def held(self: tasklist.StreamedRows) -> AsyncIterator[str]:
        index = 0
        async for part in build(self):
            yield part
            index += 1
            if index == 2:  # the head and the first piece
                await gate.wait()

    monkeypatch.setattr(tasklist.StreamedRows, "parts", held)
    async with InProcessCluster(tmp_path, managers=3, workers=1) as cluster:
        await cluster.call("service.create", name="web", image="app:1", replicas=REPLICAS)
        await cluster.wait_for_running("web", REPLICAS)
        leader = cluster.leader()
        assert leader is not None
        follower = next(m for m in cluster.managers() if m is not leader)
        params = {"services": ["web"], "compact": True, "pieces": True}
        relayed = await asyncio.wait_for(follower.call("service.ps", **params), 10)
        parts = relayed.parts()
        head = await asyncio.wait_for(anext(parts), 10)
        piece = await asyncio.wait_for(anext(parts), 10)
        assert head.endswith('"rows":[\r') and len(json.loads("[" + piece + "]")) == REPLICAS
        assert not gate.is_set()  # (the leader is still holding)
        gate.set()
        rest = [part async for part in parts]
        assert "".join([head, piece, *rest]).endswith("]}")
        # A refusal comes as it did over the unary call, before anything is written.
        with pytest.raises(APIError) as refused:
            await follower.call("service.ps", services=["nope"], compact=True, pieces=True)
        assert refused.value.code == StatusCode.NOT_FOUND and "nope" in refused.value.message


class _Streams:
    """A transport whose streams fail at once with ``error``, recording what was asked."""

    def __init__(self, error: RPCError) -> None:
        self.error = error
        self.asked: list[str] = []

    def stream(self, target: str, method: str, request: bytes, **options: Any) -> AsyncIterator[bytes]:
        self.asked.append(method)

        async def failing() -> AsyncIterator[bytes]:
            raise self.error
            yield b""  # (an async generator)

        return failing()


async def test_a_leader_without_the_stream_method_is_asked_as_before_and_other_errors_are_raised() -> None:
    tls = TLSMaterial(b"")
    old = _Streams(RPCError(StatusCode.UNIMPLEMENTED, "method not found"))
    assert await controlrelay.relay(old, "m1:2377", b"", tls=tls, timeout=5) is None  # type: ignore[arg-type]
    assert old.asked == [rpc.CONTROL_STREAM]
    gone = _Streams(RPCError(StatusCode.UNAVAILABLE, "no route"))
    with pytest.raises(RPCError) as raised:
        await controlrelay.relay(gone, "m1:2377", b"", tls=tls, timeout=5)  # type: ignore[arg-type]
    assert raised.value.code == StatusCode.UNAVAILABLE  # (Manager.call retries it, as before)


async def test_the_leader_s_parts_are_a_streamed_value_s_parts_or_the_whole_json() -> None:
    class Two(yieldingjson.Streamed):
        async def parts(self) -> AsyncIterator[str]:
            yield '{"a":'
            yield "1}"

    assert [part async for part in controlrelay.parts(Two())] == [b'{"a":', b"1}"]
    assert [part async for part in controlrelay.parts({"b": [1, "é"]})] == [b'{"b":[1,"\\u00e9"]}']
