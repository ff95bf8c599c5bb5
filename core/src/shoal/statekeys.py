"""A manager's keys at rest: the data key (DEK) its store encrypts with, wrapped by a key
encryption key (KEK), and the unlock key that autolock turns the KEK into.

Why two keys: the DEK encrypts everything the store writes (WAL records, snapshots); the KEK
only wraps the DEK (and the node's TLS key, ``identity.seal_keys``). Changing who may unlock a
manager (autolock on or off, ``swarm unlock-key --rotate``) then rewrites one small file, not
the store.

* **Autolock off:** the KEK is stored in clear beside the wrapped DEK, as in Swarm. It protects
  nothing against someone with the disk; its point is that the on-disk layout is the same in
  both modes, so turning autolock on or off or rotating only re-wraps.
* **Autolock on:** the KEK is the swarm's unlock key (``SWMKEY-1-...``), held by the user and
  by the replicated cluster object (so every manager learns a rotation). No manager keeps it on
  disk: a restarted manager cannot open its DEK or its TLS key until ``swarm unlock``.

Cipher: AES-256-GCM (``cryptography``), a fresh 96-bit random nonce per sealed value, and a
context string bound in as associated data so a value sealed for one purpose (a WAL record, a
snapshot, the wrapped DEK, the TLS key) never opens as another. GCM is an AEAD: a wrong key and
any altered byte are both refused by the same tag check, so "cannot decrypt" never silently
yields garbage. The same cipher seals the internal secrets backend's values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shoal import identity

#: The file, directly in the node's state dir, that holds the wrapped DEK (and, without
#: autolock, the KEK).
KEYS_FILE = "manager-keys.json"
KEY_BYTES = 32
UNLOCK_PREFIX = "SWMKEY-1-"
_VERSION = b"\x01"
_NONCE = 12
_DEK_CONTEXT = b"shoal manager DEK"

#: What every command of a locked manager answers (Swarm's words, shoal's command).
LOCKED_MESSAGE = (
    "swarm is encrypted and needs to be unlocked before it can be used. "
    'Please use "shoal swarm unlock" to unlock it.'
)
INVALID_KEY_MESSAGE = "swarm could not be unlocked: invalid key provided"


class SealError(ValueError):
    """A sealed value does not open: wrong key, altered bytes, or not a sealed value."""


class Sealer:
    """AES-256-GCM with a random nonce per value: ``seal(data, context)`` / ``open``.

    Layout of a sealed value: version byte 1, 12-byte nonce, ciphertext and 16-byte tag
    (29 bytes more than the plaintext).
    """

    overhead = 1 + _NONCE + 16

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an at-rest key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, data: bytes, context: bytes = b"") -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, data, context)

    def open(self, blob: bytes, context: bytes = b"") -> bytes:
        if len(blob) < self.overhead or blob[:1] != _VERSION:
            raise SealError("not a sealed value (too short or unknown version)")
        try:
            return self._aead.decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], context)
        except InvalidTag:
            raise SealError("does not decrypt: wrong key or altered data") from None


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def format_unlock_key(kek: bytes) -> str:
    """``SWMKEY-1-`` and the key in standard base64 without padding (Swarm's form)."""
    return UNLOCK_PREFIX + base64.b64encode(kek).decode().rstrip("=")


def parse_unlock_key(text: str) -> bytes:
    """The key in ``SWMKEY-1-...``; ``ValueError`` with one line naming what is wrong."""
    text = text.strip()
    if not text.startswith(UNLOCK_PREFIX):
        raise ValueError(
            f"invalid unlock key: it must start with {UNLOCK_PREFIX} (as `swarm unlock-key` prints it)"
        )
    body = text[len(UNLOCK_PREFIX) :]
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid unlock key: the part after SWMKEY-1- is not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"invalid unlock key: it holds {len(key)} bytes, not {KEY_BYTES} (is it cut short?)")
    return key


def key_id(kek: bytes) -> str:
    """A short public name for a KEK (which one a manager wraps with), not the key."""
    return hashlib.sha256(b"shoal KEK id\x00" + kek).hexdigest()[:12]


@dataclass(frozen=True)
class ManagerKeys:
    """A manager's opened keys: the store's DEK and the KEK that wraps it."""

    dek: bytes
    kek: bytes
    locked: bool

    def store_sealer(self) -> Sealer:
        return Sealer(self.dek)

    def key_sealer(self) -> Sealer:
        return Sealer(self.kek)


def keys_path(state_dir: Path) -> Path:
    return state_dir / KEYS_FILE


def exists(state_dir: Path) -> bool:
    return keys_path(state_dir).exists()


def _read(state_dir: Path) -> dict[str, object]:
    path = keys_path(state_dir)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise
    except ValueError as exc:
        raise SealError(f"{path} is unreadable ({exc}); restore it from a backup") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("dek"), str):
        raise SealError(f"{path} holds no wrapped data key; restore it from a backup")
    return doc


def is_locked(state_dir: Path) -> bool:
    """Whether this manager's keys need the unlock key (autolock was on when they were written)."""
    return exists(state_dir) and "kek" not in _read(state_dir)


def create(state_dir: Path, *, unlock_key: bytes | None = None) -> ManagerKeys:
    """A new DEK, wrapped by ``unlock_key`` (autolock) or by a new KEK stored beside it."""
    keys = ManagerKeys(new_key(), unlock_key or new_key(), locked=unlock_key is not None)
    save(state_dir, keys)
    return keys


def save(state_dir: Path, keys: ManagerKeys) -> None:
    """Write the DEK wrapped by ``keys.kek`` (and the KEK itself unless locked), atomically."""
    doc: dict[str, object] = {
        "version": 1,
        "dek": base64.b64encode(keys.key_sealer().seal(keys.dek, _DEK_CONTEXT)).decode(),
    }
    if not keys.locked:
        doc["kek"] = base64.b64encode(keys.kek).decode()
    identity.atomic_write(keys_path(state_dir), json.dumps(doc).encode(), 0o600)


def load(state_dir: Path, unlock_key: bytes | None = None) -> ManagerKeys:
    """Open the DEK with the stored KEK or, when locked, with ``unlock_key``.

    Raises ``SealError`` when locked and no key is given, or when the key does not open it.
    """
    doc = _read(state_dir)
    stored = doc.get("kek")
    if isinstance(stored, str):
        kek, locked = base64.b64decode(stored), False
    elif unlock_key is None:
        raise SealError(LOCKED_MESSAGE)
    else:
        kek, locked = unlock_key, True
    try:
        wrapped = base64.b64decode(str(doc["dek"]))
        dek = Sealer(kek).open(wrapped, _DEK_CONTEXT)
    except (SealError, binascii.Error, ValueError):
        if locked:
            raise SealError(INVALID_KEY_MESSAGE) from None
        raise SealError(
            f"{keys_path(state_dir)} does not open with its own key; restore it from a backup"
        ) from None
    return ManagerKeys(dek, kek, locked)
