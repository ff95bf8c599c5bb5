"""JSON encoding of a large reply a bounded piece at a time, yielding to the event loop.

``json.dumps`` of a 100,000-task ``service ps`` reply (33 MB) holds the loop for about half a
second, on the manager whose loop also runs Raft and the dispatcher. ``dumps`` here gives the
same bytes as ``json.dumps(obj, separators=(",", ":"))`` but encodes long lists ``CHUNK``
items at a time (each piece by the C encoder) with a yield between pieces. Only long lists
reached through dicts and lists are split; a long list inside an item of a long list is
encoded with its piece.
"""

from __future__ import annotations

import abc
import json
import json.encoder
import reprlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from shoal.looppieces import in_pieces

#: List items per piece: a thousand ``service ps`` rows are about 5 ms of encoding.
CHUNK = 1000

_encode = json.JSONEncoder(separators=(",", ":")).encode


def _one_value_encoder() -> Callable[[Any], str]:
    """What ``encode`` is: the C encoder made once, called per value. ``JSONEncoder.encode``
    makes a new one at every call, which cost more than the encoding of a ``service ps`` row
    (100,000 rows one by one: 0.29 -> 0.18 s, below the 0.30 s of one call for all). Without
    the circular-reference check: it is given flat rows, built just before."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the plain encoder
        return _encode
    encoder = json.JSONEncoder(separators=(",", ":"))
    chunks = make(
        None, encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
    join = "".join
    return lambda value: join(chunks(value, 0))


#: One value as ``dumps`` writes it (callers that keep encoded items: ``EncodedList``).
encode = _one_value_encoder()


class EncodedList(list[Any]):
    """A list that also holds each item's JSON text (``texts``, as ``encode`` gives it, in
    the same order), kept by its maker from an earlier reply: ``dumps`` joins the texts
    instead of encoding the items again (a repeated ``service ps`` of 100,000 rows: the
    manager's 0.2 s of encoding, issue 18 item 2). Anything else sees a plain list, and
    ``json.dumps`` encodes its items as for one. Its maker must not change the items
    afterwards, or must change the texts alike."""

    def __init__(self, items: list[Any], texts: list[str]) -> None:
        super().__init__(items)
        self.texts = texts

    def __repr__(self) -> str:
        """A short one: ``reprlib`` (asyncio's repr of a finished task's result) shortens a
        list but takes a subclass's whole ``repr`` first, 0.3 s for 100,000 rows."""
        shown = reprlib.repr(self[: reprlib.aRepr.maxlist + 1])
        return f"EncodedList({shown}, {len(self)} items)"


class Streamed(abc.ABC):
    """A value whose JSON text is made while it is written (``parts``), not before: the
    reader can start on the first part while the rest is still being made. It may be the
    whole value given to ``dumps``/``line_parts`` or a value of a dict that is (a reply's
    ``{"result": ...}``); anywhere else it is refused as json refuses an unknown type."""

    @abc.abstractmethod
    def parts(self) -> AsyncIterator[str]:
        """The value's JSON text, in consecutive parts (their concatenation is the text)."""


class Encoded(Streamed):
    """A value already written as JSON text, written as it is: a leader's ``service ps`` reply
    in pieces that a follower passes on to its CLI, marks and all, instead of parsing it and
    encoding it again (100,000 rows: ~0.5 s of the follower's CPU the CLI waited for, and the
    marks were lost; issue 18 item 2)."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def parts(self) -> AsyncIterator[str]:
        yield self.text


async def dumps(obj: Any) -> str:
    """``obj`` as compact JSON; the loop runs between every ``CHUNK`` items of a long list."""
    return "".join([part async for part in _parts(obj)])


async def line_parts(obj: Any) -> AsyncIterator[bytes]:
    """``obj``'s JSON and a newline (one reply line), in parts as they are made: one part for
    a value without a ``Streamed`` one (one write, as before), else at least one per part of
    each ``Streamed`` value."""
    held: str | None = None
    async for part in _parts(obj):
        if held is not None:
            yield held.encode()
        held = part
    yield (held or "").encode() + b"\n"


async def _parts(obj: Any) -> AsyncIterator[str]:
    if isinstance(obj, Streamed):
        async for part in obj.parts():
            yield part
    elif isinstance(obj, dict) and any(isinstance(value, Streamed) for value in obj.values()):
        for index, (key, value) in enumerate(obj.items()):
            yield ("," if index else "{") + _key(key) + ":"
            async for part in _parts(value):
                yield part
        yield "}"
    else:
        parts: list[str] = []
        await _encode_into(obj, parts)
        yield "".join(parts)


def _is_small(obj: Any) -> bool:
    if isinstance(obj, list):
        return len(obj) <= CHUNK and not any(
            isinstance(item, (list, dict)) and not _is_small(item) for item in obj
        )
    if isinstance(obj, dict):
        return all(not isinstance(value, (list, dict)) or _is_small(value) for value in obj.values())
    return True


def _key(key: Any) -> str:
    """A dict key as ``json.dumps`` writes it: a string as it is, and ``True``, ``None``, a
    number as json turns them into strings (``"true"``, ``"null"``, ``"1.5"``), not ``str()``'s
    ``"True"``; a key json refuses is refused the same way (TypeError)."""
    if isinstance(key, str):
        return _encode(key)
    encoded = _encode({key: 0})  # '{"<key>":0}'
    return encoded[1 : encoded.rindex(":")]


async def _encode_into(obj: Any, parts: list[str]) -> None:
    if _is_small(obj):
        parts.append(_encode(obj))
    elif isinstance(obj, dict):
        parts.append("{")
        for index, (key, value) in enumerate(obj.items()):
            if index:
                parts.append(",")
            parts.append(_key(key) + ":")
            await _encode_into(value, parts)
        parts.append("}")
    elif isinstance(obj, EncodedList) and len(obj.texts) == len(obj):
        parts.append("[" + ",".join(obj.texts) + "]")  # one C join: no piece is long
    else:
        # Each piece in one C call, not looked into: walking a thousand rows for long lists
        # inside them cost more than the encoding (a reply's long list is its rows).
        encoded = [_encode(piece)[1:-1] async for piece in in_pieces(obj, CHUNK)]
        parts.append("[" + ",".join(encoded) + "]")
