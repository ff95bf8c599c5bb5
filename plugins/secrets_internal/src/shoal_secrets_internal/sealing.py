"""Sealing secret values with AES-256-GCM under the cluster's secrets key.

Why AES-GCM: an AEAD from ``cryptography`` (OpenSSL), so a sealed value cannot be altered or
swapped unnoticed; the secret's ID is the associated data, so the sealed form of one secret
copied into another fails to open instead of handing the wrong value to a task. Each value
gets a fresh random 96-bit nonce: a key seals far fewer than 2**32 values in a swarm's life.

At-rest form: ``b"\\x01" + nonce (12 bytes) + ciphertext and tag``. The key (32 random bytes)
is the cluster material the kernel keeps in the cluster object. That object is in the same
store, so a reader of a manager's WAL and snapshots who knows the format can find the key and
open every value: sealing keeps values out of plain sight (a grep of the WAL finds nothing),
not away from someone holding a manager's disk. Encrypting the WAL under a key-encryption key
(autolock) is what closes that; until then, protect managers' state dirs like the key they are.
"""

from __future__ import annotations

import os
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from shoal.plugin import SecretFetchError, SecretUse

FORMAT = b"\x01"
KEY_BYTES = 32
NONCE_BYTES = 12


class InternalSecrets:
    """Seals values into the store and opens them for the leader's assignments."""

    role: ClassVar[str] = "secrets"
    api_version: ClassVar[int] = 2
    takes_value: ClassVar[bool] = True

    async def new_material(self) -> bytes:
        return AESGCM.generate_key(bit_length=KEY_BYTES * 8)

    async def store(self, material: bytes, secret_id: str, name: str, value: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT + nonce + _cipher(material).encrypt(nonce, value, secret_id.encode())

    async def fetch(self, material: bytes, stored: bytes, use: SecretUse) -> bytes:
        where = f"internal secrets backend: secret {use.secret_name or use.secret_id}"
        if not stored.startswith(FORMAT) or len(stored) < 1 + NONCE_BYTES + 16:
            raise SecretFetchError(f"{where}: the stored value is not in the internal format")
        nonce, sealed = stored[1 : 1 + NONCE_BYTES], stored[1 + NONCE_BYTES :]
        try:
            return _cipher(material).decrypt(nonce, sealed, use.secret_id.encode())
        except InvalidTag:
            raise SecretFetchError(
                f"{where}: the stored value does not open (altered, or sealed for another secret or swarm)"
            ) from None


def _cipher(material: bytes) -> AESGCM:
    if len(material) != KEY_BYTES:
        raise SecretFetchError(
            f"internal secrets backend: the cluster's secrets key has {len(material)} bytes, not {KEY_BYTES}"
        )
    return AESGCM(material)
