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


def new_id() -> str:
    """A fresh 25-character base36 ID (17 random bytes with the top bit set)."""
    # os.urandom is what secrets.token_bytes returns; importing secrets (hmac, hashlib) would
    # cost every CLI command that only shows short IDs a few ms of start-up.
    raw = bytearray(os.urandom(17))
    raw[0] |= 0x80
    return base36(int.from_bytes(raw, "big"), ID_LENGTH)[:ID_LENGTH]


def short_id(object_id: str) -> str:
    """The 12-character form shown in tables."""
    return object_id[:SHORT_ID_LENGTH]
