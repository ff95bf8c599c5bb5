"""Issue 15: a manager's keys at rest (``shoal.statekeys``) and the sealed node key."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from shoal import identity, statekeys
from shoal.statekeys import Sealer, SealError


def self_signed(key_pem: bytes) -> bytes:
    key = identity.load_private_key(key_pem)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_unlock_key_text_round_trips_and_bad_text_is_named() -> None:
    key = statekeys.new_key()
    text = statekeys.format_unlock_key(key)
    assert text.startswith("SWMKEY-1-") and "=" not in text
    assert statekeys.parse_unlock_key(f"  {text}\n") == key
    for bad, why in (
        ("SWMTKN-1-abc", "must start with SWMKEY-1-"),
        ("SWMKEY-1-***", "not base64"),
        ("SWMKEY-1-" + base64.b64encode(b"short").decode(), "holds 5 bytes"),
    ):
        with pytest.raises(ValueError, match=why) as info:
            statekeys.parse_unlock_key(bad)
        assert "\n" not in str(info.value)


def test_sealer_refuses_wrong_key_wrong_context_and_altered_bytes() -> None:
    sealer = Sealer(statekeys.new_key())
    blob = sealer.seal(b"value", b"ctx")
    assert b"value" not in blob
    assert sealer.open(blob, b"ctx") == b"value"
    altered = bytearray(blob)
    altered[-1] ^= 1
    for attempt in (
        lambda: Sealer(statekeys.new_key()).open(blob, b"ctx"),
        lambda: sealer.open(blob, b"other"),
        lambda: sealer.open(bytes(altered), b"ctx"),
        lambda: sealer.open(b"\x01short", b"ctx"),
    ):
        with pytest.raises(SealError):
            attempt()


def test_unlocked_keys_open_alone_and_locked_keys_need_the_unlock_key(tmp_path: Path) -> None:
    keys = statekeys.create(tmp_path)
    assert not statekeys.is_locked(tmp_path)
    assert statekeys.load(tmp_path) == keys

    unlock = statekeys.new_key()
    locked = statekeys.ManagerKeys(keys.dek, unlock, locked=True)
    statekeys.save(tmp_path, locked)  # autolock turned on: re-wrapped, same DEK
    on_disk = statekeys.keys_path(tmp_path).read_bytes()
    assert base64.b64encode(unlock) not in on_disk and base64.b64encode(keys.dek) not in on_disk
    assert statekeys.is_locked(tmp_path)
    with pytest.raises(SealError, match="needs to be unlocked"):
        statekeys.load(tmp_path)
    with pytest.raises(SealError, match="invalid key provided"):
        statekeys.load(tmp_path, statekeys.new_key())
    assert statekeys.load(tmp_path, unlock).dek == keys.dek

    doc = json.loads(on_disk)
    wrapped = bytearray(base64.b64decode(doc["dek"]))
    wrapped[5] ^= 1
    doc["dek"] = base64.b64encode(bytes(wrapped)).decode()
    statekeys.keys_path(tmp_path).write_text(json.dumps(doc))
    with pytest.raises(SealError, match="invalid key provided"):
        statekeys.load(tmp_path, unlock)


def test_node_key_is_sealed_on_disk_once_a_sealer_is_registered(tmp_path: Path) -> None:
    key_pem = identity.generate_key()
    cert_pem = self_signed(key_pem)
    creds = identity.NodeCredentials(key_pem, cert_pem, cert_pem)
    sealer = Sealer(statekeys.new_key())
    identity.seal_keys(tmp_path, sealer)
    try:
        identity.write_credentials(tmp_path, creds)
        raw = (tmp_path / identity.KEY_FILE).read_bytes()
        assert b"PRIVATE KEY-----\n" not in raw.replace(identity.SEALED_KEY_LABEL, b"")
        assert identity.key_is_sealed(tmp_path)
        assert identity.load_credentials(tmp_path) == creds
        identity.seal_keys(tmp_path, Sealer(statekeys.new_key()))
        with pytest.raises(identity.KeySealedError, match="does not open"):
            identity.load_credentials(tmp_path)
        identity.seal_keys(tmp_path, None)
        with pytest.raises(identity.KeySealedError, match="unlock the manager first"):
            identity.load_credentials(tmp_path)
    finally:
        identity.seal_keys(tmp_path, None)


def test_keyring_seals_a_clear_node_key_and_follows_the_cluster(tmp_path: Path) -> None:
    """A manager from before encryption at rest: its first start seals the clear TLS key;
    without autolock any reader of the state dir still opens it (the KEK lies beside it), with
    autolock only the unlock key does, and a rotation re-wraps in one file."""
    certs = tmp_path / "certificates"
    key_pem = identity.generate_key()
    cert_pem = self_signed(key_pem)
    creds = identity.NodeCredentials(key_pem, cert_pem, cert_pem)
    identity.write_credentials(certs, creds)
    keyring = statekeys.ManagerKeyring(tmp_path, certs)
    try:
        chain = keyring.open()
        assert identity.key_is_sealed(certs)
        identity.seal_keys(certs, None)  # another process: the stored KEK opens it
        assert identity.load_credentials(certs) == creds
        before = statekeys.keys_path(tmp_path).read_bytes()  # a copy of the disk, autolock off
        old_record = chain.seal(b"written before autolock", b"ctx")

        first, second = statekeys.new_key(), statekeys.new_key()
        assert keyring.follow(True, first)
        assert not keyring.follow(True, first)
        # Autolock on replaced the DEK: the copy's DEK opens nothing written from now on.
        new_record = chain.seal(b"written after", b"ctx")
        statekeys.keys_path(tmp_path).write_bytes(before)
        stolen = statekeys.load(tmp_path)
        with pytest.raises(SealError):
            Sealer(stolen.dek).open(new_record, b"ctx")
        assert keyring.keys is not None
        statekeys.save(tmp_path, keyring.keys)
        assert chain.open(old_record, b"ctx") == b"written before autolock"
        assert statekeys.load(tmp_path, first).old_deks == (stolen.dek,)
        assert identity.load_credentials(certs) == creds  # re-sealed with the new DEK
        identity.seal_keys(certs, None)  # another process: only the unlock key opens it now
        with pytest.raises(identity.KeySealedError):
            identity.load_credentials(certs)
        assert keyring.follow(True, second)
        with pytest.raises(SealError, match="invalid key"):
            statekeys.ManagerKeyring(tmp_path, certs).unlock(first)
        other = statekeys.ManagerKeyring(tmp_path, certs)
        other.unlock(second)
        other.open()
        assert identity.load_credentials(certs) == creds

        assert keyring.follow(False, b"")
        assert not statekeys.is_locked(tmp_path)
        keyring.release()
        assert not identity.key_is_sealed(certs) and not statekeys.exists(tmp_path)
        assert identity.load_credentials(certs) == creds
    finally:
        identity.seal_keys(certs, None)
