"""Object identifiers in Swarm's format.

Swarm draws 17 random bytes, sets the top bit so the number always has the same width,
and writes it in base36: 25 characters. Tables show the first 12.
"""

from __future__ import annotations

import os

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 25
SHORT_ID_LENGTH = 12


def base36(number: int, width: int = 0) -> str:
    """Render a non-negative integer in lower-case base36, left-padded with zeros to width."""
    if number < 0:
        raise ValueError("base36 takes a non-negative integer")
    digits = []
    while number:
        number, rem = divmod(number, 36)
        digits.append(_ALPHABET[rem])
    text = "".join(reversed(digits)) or "0"
    return text.rjust(width, "0")


#: Three base36 digits per entry (36**3 of them), built on first use: an ID is then 9 table
#: lookups instead of 26 divisions of a 136-bit number (new_id was half of making a task).
_TRIPLES: list[str] = []
_TOP_BIT = 1 << 135
_TRIPLE = 36**3
_ID_SPAN = 36**ID_LENGTH


def _triples() -> list[str]:
    if not _TRIPLES:
        _TRIPLES.extend(a + b + c for a in _ALPHABET for b in _ALPHABET for c in _ALPHABET)
    return _TRIPLES


def new_id() -> str:
    """A fresh 25-character base36 ID (17 random bytes with the top bit set).

    Such a number has 26 or 27 base36 digits; the ID is its first 25 (as ``base36(number,
    25)[:25]`` gives), i.e. the digits of the number divided by 36 once or twice."""
    # os.urandom is what secrets.token_bytes returns; importing secrets (hmac, hashlib) would
    # cost every CLI command that only shows short IDs a few ms of start-up.
    number = (int.from_bytes(os.urandom(17), "big") | _TOP_BIT) // 36
    if number >= _ID_SPAN:
        number //= 36
    triples = _TRIPLES or _triples()
    parts = []
    for _ in range(8):
        number, rem = divmod(number, _TRIPLE)
        parts.append(triples[rem])
    parts.append(_ALPHABET[number])  # 25 = 8 * 3 + 1 digits; what is left is below 36
    parts.reverse()
    return "".join(parts)


def short_id(object_id: str) -> str:
    """The 12-character form shown in tables."""
    return object_id[:SHORT_ID_LENGTH]
