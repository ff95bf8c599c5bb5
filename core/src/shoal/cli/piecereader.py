"""Reading a reply line whose rows come in marked pieces, a piece at a time as it arrives.

A manager writes a ``service ps`` reply asked for with ``pieces`` while it builds it
(``tasklist.StreamedRows``): ``{"result": {"columns": [...], "now": t, "rows": [`` then each
piece of rows followed by ``tasklist.MARK`` (a carriage return: JSON whitespace, found nowhere
else in the line), then ``]}}``. ``Client.call`` reads the whole line before anything is parsed;
here each piece is parsed, and handed to the caller, as soon as its mark arrives, so the CLI's
parse runs while the manager builds the next piece (100,000 tasks: ~0.2 s of the CLI's work
done meanwhile, issue 18 item 2). A reply without marks (a daemon that predates them, or a
follower's, which relays the leader's reply whole) is parsed whole at its end, as before.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from shoal.client import Client, ClientError, _answer

#: ``tasklist.MARK`` (not imported: the CLI does not load the manager's modules).
MARK = b"\r"
#: What closes the head ``{"result":{"columns":[...],...,"rows":[`` to parse it.
_HEAD_CLOSE = b"]}}"
#: Bytes asked of the socket per read.
READ_SIZE = 1 << 18

#: Called with the head's result (``columns``, ``now``, ``rows`` empty) and each piece's rows.
OnPiece = Callable[[dict[str, Any], list[Any]], None]


class _Line:
    """One reply line fed as it arrives: its marked pieces parsed and handed over as each
    completes; the rest kept for ``message``."""

    def __init__(self, on_piece: OnPiece) -> None:
        self._on_piece = on_piece
        self._buffer = bytearray()
        #: The line up to its first mark; ``None`` before it (or for a line without one).
        self._head: bytes | None = None
        self._head_result: dict[str, Any] = {}
        #: Whether marks are followed: cleared for a head that does not parse as expected.
        self._marked = True
        self.done = False

    def feed(self, data: bytes) -> None:
        end = data.find(b"\n")
        if end != -1:
            data = data[:end]
            self.done = True
        self._buffer += data
        if self._marked:
            self._take_pieces()

    def _take_pieces(self) -> None:
        buffer = self._buffer
        start = 0
        while (mark := buffer.find(MARK, start)) != -1:
            segment = bytes(buffer[start:mark])
            start = mark + 1
            if self._head is None:
                if not self._take_head(segment):
                    return  # not the shape expected: parsed whole at the end
                continue
            if segment[:1] == b",":
                segment = segment[1:]
            self._on_piece(self._head_result, json.loads(b"[" + segment + b"]"))
        del buffer[:start]

    def _take_head(self, head: bytes) -> bool:
        try:
            result = json.loads(head + _HEAD_CLOSE).get("result")
        except ValueError:
            result = None
        if not isinstance(result, dict) or not isinstance(result.get("columns"), list):
            self._marked = False  # (the buffer still holds the whole line so far)
            return False
        self._head, self._head_result = head, result
        return True

    def message(self) -> dict[str, Any]:
        """The reply line's message (``Client``'s: an error raises ``ClientError``), with the
        rows of pieces already handed over left out. A line that does not parse (a manager
        that failed after its first pieces were written appends its error line to them): one
        line saying so, not a traceback."""
        tail = bytes(self._buffer)
        try:
            return _answer(tail if self._head is None else self._head + tail)
        except ValueError:
            raise ClientError(
                "INTERNAL", "the shoal daemon's answer was cut short (see its log for the error)"
            ) from None


def call_in_pieces(client: Client, method: str, params: dict[str, Any], on_piece: OnPiece) -> Any:
    """``client.call(method, **params)``'s result, the rows of each marked piece handed to
    ``on_piece`` as it arrives and left out of the result's ``rows``; the same errors and
    warning. A connection that ends without an answer: the call is made again by
    ``client.call`` (a read), which says why as it does for any call."""
    sock = client._connect()
    line = _Line(on_piece)
    try:
        try:
            sock.sendall(json.dumps({"method": method, "params": params}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read everything: its answer line says why
        while not line.done:
            data = sock.recv(READ_SIZE)
            if not data:
                break
            line.feed(data)
    except OSError as exc:
        failure = client.failure(method, exc)
        if failure is None:
            raise
        raise failure from None
    finally:
        sock.close()
    if not line.done:
        return client.call(method, **params)
    message = line.message()
    if message.get("warning"):
        print(f"Warning: {message['warning']}", file=sys.stderr)
    if "result" not in message:
        raise ClientError("UNAVAILABLE", "the shoal daemon closed the connection without an answer")
    return message["result"]
