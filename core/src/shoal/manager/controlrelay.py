"""A control call's answer relayed from the leader as it is written (issue 18 item 2).

A follower forwards its CLI's control calls to the leader. As one unary reply, a ``service
ps`` of 100,000 tasks reached the follower only once the leader had built every row, so its
CLI got nothing before then and parsed nothing while the leader built: the leader's build
and the CLI's parse added up (1.85 s for a first listing through a follower against 1.39 s
against the leader). Over ``rpc.CONTROL_STREAM`` the leader sends the answer's JSON in the
parts it writes it in (``parts``: each piece of rows as soon as it is built), and the
follower passes each part on to its CLI as it arrives (``Relayed``), as the leader writes
them to its own CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from shoal import rpc, yieldingjson
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial, TransportProvider


async def parts(result: Any) -> AsyncIterator[bytes]:
    """The leader's side: ``result``'s JSON text in parts, a ``Streamed`` value's as they are
    made (``tasklist.StreamedRows``: the head, then each piece of rows), any other whole."""
    if isinstance(result, yieldingjson.Streamed):
        async for part in result.parts():
            yield part.encode()
    else:
        yield (await yieldingjson.dumps(result)).encode()


class Relayed(yieldingjson.Streamed):
    """The follower's side: the leader's parts, written on as they arrive (its first part
    already read, so that a refusal was raised to the caller before anything was written).
    A failure after the first part cuts the answer short; the CLI says so (``piecereader``)."""

    def __init__(self, first: bytes, rest: AsyncIterator[bytes]) -> None:
        self._first = first
        self._rest = rest

    async def parts(self) -> AsyncIterator[str]:
        try:
            yield self._first.decode()
            async for message in self._rest:
                yield message.decode()
        finally:
            close = getattr(self._rest, "aclose", None)  # (the stream ends with the writing)
            if close is not None:
                await close()


async def relay(
    transport: TransportProvider,
    leader: str,
    request: bytes,
    *,
    tls: TLSMaterial,
    timeout: float,  # noqa: ASYNC109 - the deadline travels with the stream, not around it
) -> Relayed | None:
    """``request`` (a serialized ``ControlRequest``) asked of ``leader`` over
    ``CONTROL_STREAM``, once its first part has come: errors before it are raised here, as a
    unary call raises them (``RPCError``). ``None`` when the leader does not serve the method
    (an older version): ask it over ``CONTROL``."""
    messages = transport.stream(leader, rpc.CONTROL_STREAM, request, tls=tls, timeout=timeout)
    try:
        first = await anext(aiter(messages))
    except StopAsyncIteration:  # (the leader sends at least one part; nothing is no answer)
        raise RPCError(StatusCode.INTERNAL, f"{rpc.CONTROL_STREAM}: the leader sent no answer") from None
    except RPCError as exc:
        if exc.code == StatusCode.UNIMPLEMENTED:
            return None
        raise
    return Relayed(first, messages)
