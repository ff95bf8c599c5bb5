"""A manager's keys at rest: the data key (DEK) its store encrypts with, wrapped by a key
encryption key (KEK), and the unlock key that autolock turns the KEK into.

Why two keys: the DEK encrypts everything the store writes (WAL records, snapshots) and the
node's TLS key (``identity.seal_keys``); the KEK only wraps the DEK, so the TLS key and the
store open with the KEK and with nothing else. Changing who may unlock a manager (autolock on
or off, ``swarm unlock-key --rotate``) then rewrites one small file atomically, not the store
and not the TLS key.

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


#: How many earlier DEKs a manager keeps (records sealed with them wait for compaction).
MAX_OLD_DEKS = 7


class KeyChain:
    """Seals with the current DEK and opens with it or with any earlier one.

    A DEK is replaced when autolock is turned on (as in Swarm: a copy of the disk taken while
    the KEK lay beside it must not open what is written from then on). The store holds this one
    object, so it seals with the new DEK at once; records and snapshots sealed with an older
    one still open until compaction retires them.
    """

    def __init__(self, deks: tuple[bytes, ...]) -> None:
        self._sealers = [Sealer(dek) for dek in deks]

    def rotate(self, deks: tuple[bytes, ...]) -> None:
        self._sealers = [Sealer(dek) for dek in deks]

    def seal(self, data: bytes, context: bytes = b"") -> bytes:
        return self._sealers[0].seal(data, context)

    def open(self, blob: bytes, context: bytes = b"") -> bytes:
        for sealer in self._sealers:
            try:
                return sealer.open(blob, context)
            except SealError:
                continue
        raise SealError("does not decrypt: wrong key or altered data")


@dataclass(frozen=True)
class ManagerKeys:
    """A manager's opened keys: the store's DEK (and earlier ones) and the KEK that wraps them."""

    dek: bytes
    kek: bytes
    locked: bool
    old_deks: tuple[bytes, ...] = ()

    @property
    def deks(self) -> tuple[bytes, ...]:
        return (self.dek, *self.old_deks)

    def store_sealer(self) -> KeyChain:
        return KeyChain(self.deks)

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
    wrap = keys.key_sealer()
    doc: dict[str, object] = {
        "version": 1,
        "dek": base64.b64encode(wrap.seal(keys.dek, _DEK_CONTEXT)).decode(),
    }
    if keys.old_deks:
        doc["old_deks"] = [base64.b64encode(wrap.seal(dek, _DEK_CONTEXT)).decode() for dek in keys.old_deks]
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
    old = doc.get("old_deks", [])
    if not isinstance(old, list):
        raise SealError(
            f"{keys_path(state_dir)} is unreadable (old_deks is not a list); restore it from a backup"
        )
    try:
        unwrap = Sealer(kek)
        dek = unwrap.open(base64.b64decode(str(doc["dek"])), _DEK_CONTEXT)
        old_deks = tuple(unwrap.open(base64.b64decode(str(w)), _DEK_CONTEXT) for w in old)
    except (SealError, binascii.Error, ValueError):
        if locked:
            raise SealError(INVALID_KEY_MESSAGE) from None
        raise SealError(
            f"{keys_path(state_dir)} does not open with its own key; restore it from a backup"
        ) from None
    return ManagerKeys(dek, kek, locked, old_deks)


class _NodeKeySealer:
    """Seals the node's TLS key with the DEK, so one atomic rewrite of ``KEYS_FILE`` re-wraps
    both: a crash in the middle of a rotation can never leave the DEK and the TLS key wrapped
    by different KEKs (Swarm gets the same from keeping both in one file). Opens with earlier
    DEKs too, so a crash between a new DEK and the TLS key sealed with it loses nothing."""

    def __init__(self, chain: KeyChain) -> None:
        self._sealer = chain

    def seal(self, data: bytes, context: bytes = b"") -> bytes:
        return self._sealer.seal(data, b"shoal node TLS key\x00" + context)

    def open(self, blob: bytes, context: bytes = b"") -> bytes:
        return self._sealer.open(blob, b"shoal node TLS key\x00" + context)


def unlocked_node_key_sealer(state_dir: Path) -> _NodeKeySealer | None:
    """What opens the node key under ``state_dir`` when its KEK is stored (autolock off)."""
    if not exists(state_dir) or is_locked(state_dir):
        return None
    try:
        return _NodeKeySealer(load(state_dir).store_sealer())
    except (SealError, OSError):
        return None


class ManagerKeyring:
    """One node's keys at rest, as its daemon uses them.

    A manager opens (or, the first time, creates) its keys before anything reads its TLS key
    or its store; with autolock the daemon must ``unlock`` first. ``follow`` re-wraps when the
    cluster's autolock setting or unlock key changes, and replaces the DEK when autolock is
    turned on. A worker has no keyring file and keeps its TLS key in clear (Swarm: workers are
    never locked).
    """

    def __init__(self, state_dir: Path, certs_dir: Path) -> None:
        self.state_dir = state_dir
        self.certs_dir = certs_dir
        self.keys: ManagerKeys | None = None
        #: The store's sealer: one object for the life of the store, so a new DEK reaches it.
        self.chain = KeyChain(())

    def needs_unlock(self) -> bool:
        """Whether this node's keys are wrapped by an unlock key this process does not hold."""
        return self.keys is None and is_locked(self.state_dir)

    def create(self, unlock_key: bytes | None) -> ManagerKeys:
        """New keys for a new manager (``swarm init``; with ``unlock_key`` when ``--autolock``)."""
        self.keys = create(self.state_dir, unlock_key=unlock_key)
        return self.keys

    def unlock(self, unlock_key: bytes) -> ManagerKeys:
        """``swarm unlock``: ``SealError`` (``INVALID_KEY_MESSAGE``) when the key does not open them."""
        self.keys = load(self.state_dir, unlock_key)
        return self.keys

    def open(self, *, fresh: bool = False) -> KeyChain:
        """The store sealer of a starting manager, from its keys: loaded, or created for a state
        dir that has none (a manager from before encryption at rest). ``fresh``: a new, empty
        store (a join or a promotion) gets new keys whatever a failed earlier attempt left.
        Seals the node key on disk if it is still in clear."""
        if fresh or (self.keys is None and not exists(self.state_dir)):
            self.keys = create(self.state_dir)
        elif self.keys is None:
            self.keys = load(self.state_dir)
        self.chain = KeyChain(self.keys.deks)
        identity.seal_keys(self.certs_dir, _NodeKeySealer(self.chain))
        if (self.certs_dir / identity.KEY_FILE).exists() and not identity.key_is_sealed(self.certs_dir):
            identity.write_credentials(self.certs_dir, identity.load_credentials(self.certs_dir))
        return self.chain

    def follow(self, auto_lock: bool, unlock_key: bytes) -> bool:
        """Re-wrap for the cluster's current autolock setting and unlock key; True if it did.

        Turning autolock on also replaces the DEK (the old one was wrapped by a KEK on disk):
        the store seals with the new one at once, and the TLS key is sealed again with it.
        """
        keys = self.keys
        if keys is None:
            return False
        if auto_lock and unlock_key and not keys.locked:
            old = keys.deks[:MAX_OLD_DEKS]
            self.keys = ManagerKeys(new_key(), unlock_key, locked=True, old_deks=old)
        elif auto_lock and unlock_key and keys.kek != unlock_key:
            self.keys = ManagerKeys(keys.dek, unlock_key, locked=True, old_deks=keys.old_deks)
        elif not auto_lock and keys.locked:
            self.keys = ManagerKeys(keys.dek, keys.kek, locked=False, old_deks=keys.old_deks)
        else:
            return False
        new_dek = self.keys.dek != keys.dek
        creds = None
        if new_dek and (self.certs_dir / identity.KEY_FILE).exists():
            creds = identity.load_credentials(self.certs_dir)  # before the keys file changes
        save(self.state_dir, self.keys)
        if new_dek:
            self.chain.rotate(self.keys.deks)
            identity.seal_keys(self.certs_dir, _NodeKeySealer(self.chain))
        if creds is not None:
            identity.write_credentials(self.certs_dir, creds)
        return True

    def release(self) -> None:
        """This node is no longer a manager (demoted, or leaving): its TLS key goes back to
        clear (if it still has one) and the keys file is deleted."""
        if (self.certs_dir / identity.KEY_FILE).exists() and self.keys is not None:
            creds = identity.load_credentials(self.certs_dir)
            identity.seal_keys(self.certs_dir, None)
            identity.write_credentials(self.certs_dir, creds)
        identity.seal_keys(self.certs_dir, None)
        keys_path(self.state_dir).unlink(missing_ok=True)
        self.keys = None
