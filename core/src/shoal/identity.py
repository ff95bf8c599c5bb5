"""A node's own identity: its key, its CSR, its certificate, and the root it trusts.

This is kernel-side plumbing and holds no CA logic: the CA provider signs, everything else
about a node's identity happens here. The kernel generates every node key itself (ECDSA
P-256, like Swarm's cfssl default) so that no provider ever sees a node's private key, and it
parses peers' certificates into ``PeerIdentity`` (CN = node ID, OU = role, O = cluster ID).

On disk the three files keep Swarm's names (``swarm-node.key``, ``swarm-node.crt``,
``swarm-root-ca.crt``) and are written atomically (temporary file, fsync, rename) so a crash
never leaves a key that does not match its certificate half-written; the key file is 0600
from the moment it exists.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from shoal.roles.transport import PeerIdentity

KEY_FILE = "swarm-node.key"
CERT_FILE = "swarm-node.crt"
ROOT_FILE = "swarm-root-ca.crt"

#: How many intermediates ``verify_chain`` follows before giving up (a root rotation adds one).
_MAX_CHAIN_DEPTH = 4


class CertificateError(ValueError):
    """A certificate is malformed, or does not chain to the expected root, or is out of date."""


@dataclass(frozen=True)
class NodeCredentials:
    """The PEM material a node loads from its certificates directory."""

    key_pem: bytes
    cert_pem: bytes
    root_pem: bytes


# --------------------------------------------------------------------------- keys and CSRs


def generate_key() -> bytes:
    """A fresh ECDSA P-256 private key, PEM (PKCS#8, unencrypted)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Parse a PEM private key and insist on ECDSA (the only kind the cluster issues for)."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid private key PEM: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"private key must be ECDSA, got {type(key).__name__}")
    return key


def build_csr(key_pem: bytes, common_name: str = "") -> bytes:
    """A PEM certificate signing request for ``key_pem``.

    The subject is only a hint (the CA sets CN/OU/O itself from what the manager decided);
    Swarm's CSRs carry no meaningful subject either.
    """
    key = load_private_key(key_pem)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a CSR a node sent and check it is signed by the key it carries.

    Every CA plugin needs this before signing; ``ValueError`` names the fault (not PEM, bad
    signature, RSA under 2048 bits, a key type other than ECDSA or RSA).
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ValueError(f"invalid CSR: not a PEM certificate request ({exc})") from None
    try:
        valid = csr.is_signature_valid
    except Exception as exc:  # unsupported key types raise from the backend
        raise ValueError(f"invalid CSR: cannot check its signature ({exc})") from None
    if not valid:
        raise ValueError("invalid CSR: its signature does not match its public key")
    public = csr.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise ValueError(f"invalid CSR: RSA key of {public.key_size} bits, at least 2048 needed")
    elif not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValueError(f"invalid CSR: key type {type(public).__name__} not supported (ECDSA or RSA)")
    return csr


# --------------------------------------------------------------------------- certificates


def load_certificate(cert_pem: bytes) -> x509.Certificate:
    """Parse the first certificate in ``cert_pem``; ``CertificateError`` if there is none."""
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CertificateError(f"invalid certificate PEM: {exc}") from None


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (possibly none)."""
    if not pem.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateError(f"invalid certificate PEM bundle: {exc}") from None


def _single(name: x509.Name, oid: x509.ObjectIdentifier, what: str) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise CertificateError(f"certificate subject must have exactly one {what}, found {len(values)}")
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def parse_identity(cert_pem: bytes | x509.Certificate) -> PeerIdentity:
    """Read node ID (CN), role (OU) and cluster ID (O) from a certificate's subject.

    Parsing is not trusting: call ``verify_chain`` first for a certificate from a peer.
    """
    cert = cert_pem if isinstance(cert_pem, x509.Certificate) else load_certificate(cert_pem)
    subject = cert.subject
    return PeerIdentity(
        node_id=_single(subject, NameOID.COMMON_NAME, "CN"),
        role=_single(subject, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU"),
        cluster_id=_single(subject, NameOID.ORGANIZATION_NAME, "O"),
    )


def cert_not_after(cert_pem: bytes) -> dt.datetime:
    """When the certificate expires (timezone-aware UTC); the renewal timer starts from it."""
    return load_certificate(cert_pem).not_valid_after_utc


def cert_not_before(cert_pem: bytes) -> dt.datetime:
    """When the certificate starts to be valid (timezone-aware UTC)."""
    return load_certificate(cert_pem).not_valid_before_utc


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "<empty subject>"


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_validity(cert: x509.Certificate, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateError(
            f"certificate {_describe(cert)} is not yet valid (valid from {_when(cert.not_valid_before_utc)})"
        )
    if now > cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate {_describe(cert)} has expired (valid until {_when(cert.not_valid_after_utc)})"
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ``issuer`` signed ``cert``; False on a name mismatch; raises on a bad signature."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        raise CertificateError(
            f"certificate {_describe(cert)} has a bad signature: it names {_describe(issuer)} as issuer "
            "but was not signed by that key"
        ) from None
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"certificate {_describe(cert)} cannot be checked: {exc}") from None
    return True


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries CA basic constraints (a node certificate never does)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _check_may_issue(cert: x509.Certificate) -> None:
    """An intermediate must be a CA certificate allowed to sign certificates.

    Without this check a node could sign a certificate with its own node key (its leaf is
    issued by the root, so the chain "leaf -> node certificate -> root" would verify) and
    claim any identity, a manager's included.
    """
    if not is_ca_certificate(cert):
        raise CertificateError(f"certificate {_describe(cert)} signs another one but is not a CA certificate")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise CertificateError(
            f"certificate {_describe(cert)} signs another one but its key usage forbids it"
        )


def verify_chain(
    cert_pem: bytes, root_pem: bytes, *, intermediates_pem: bytes = b"", now: dt.datetime | None = None
) -> None:
    """Check that ``cert_pem`` was issued by ``root_pem`` (optionally through intermediates).

    Checks issuer names, signatures and validity periods of the leaf, every intermediate used
    and the root. Raises ``CertificateError`` naming what is wrong: wrong issuer, bad
    signature, expired, not yet valid. Returns ``None`` when the chain holds.

    ``root_pem`` may be a bundle (during a root rotation both roots are trusted). Extra
    certificates after the leaf in ``cert_pem`` are treated as intermediates, so an issued
    certificate with its chain appended can be passed as it is. An intermediate must be a CA
    certificate whose key usage (if any) allows signing certificates.
    """
    when = now or dt.datetime.now(dt.UTC)
    certs = load_certificates(cert_pem)
    if not certs:
        raise CertificateError("no certificate to verify")
    leaf, pool = certs[0], certs[1:] + load_certificates(intermediates_pem)
    roots = load_certificates(root_pem)
    if not roots:
        raise CertificateError("no root certificate to verify against")
    _check_validity(leaf, when)
    current = leaf
    for _ in range(_MAX_CHAIN_DEPTH + 1):
        for root in roots:
            if _issued_by(current, root):
                _check_validity(root, when)
                return
        issuer = next((c for c in pool if c is not current and _issued_by(current, c)), None)
        if issuer is None:
            break
        _check_may_issue(issuer)
        _check_validity(issuer, when)
        current = issuer
    names = ", ".join(_describe(r) for r in roots)
    raise CertificateError(
        f"certificate {_describe(leaf)} is not issued by the cluster root: "
        f"issuer is {current.issuer.rfc4514_string() or '<empty>'}, expected {names}"
    )


# --------------------------------------------------------------------------- files


def atomic_write(path: Path, data: bytes, mode: int, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file, never half.
    ``durable``: on disk (the file and its directory synced) before returning; off for a file
    only read while its writer runs, rewritten often (a hollow fleet's status file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # before any byte of a key is written
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_credentials(directory: Path, creds: NodeCredentials) -> None:
    """Save key, certificate and root into ``directory`` (created 0700 if missing), all 0600:
    nothing under a node's state dir is for other local users (see ``shoal.filemodes``).

    Each file is replaced atomically, but three files cannot be replaced at once: a crash in
    between can leave a new certificate next to the old key. ``load_credentials`` detects that
    mismatch and refuses, rather than serving with a key that does not fit its certificate.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(directory / ROOT_FILE, creds.root_pem, 0o600)
    atomic_write(directory / CERT_FILE, creds.cert_pem, 0o600)
    atomic_write(directory / KEY_FILE, _seal_key(directory, creds.key_pem), 0o600)


def _public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_cert(key_pem: bytes, cert_pem: bytes) -> bool:
    """True if the certificate was issued for this private key."""
    public = load_certificate(cert_pem).public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    return _public_bytes(load_private_key(key_pem).public_key()) == _public_bytes(public)


def load_credentials(directory: Path) -> NodeCredentials:
    """Read the three files back; errors name the missing or inconsistent file."""
    paths = {name: directory / name for name in (KEY_FILE, CERT_FILE, ROOT_FILE)}
    data: dict[str, bytes] = {}
    for name, path in paths.items():
        try:
            data[name] = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"node certificate file missing: {path}") from None
    data[KEY_FILE] = _open_key(paths[KEY_FILE], data[KEY_FILE])
    creds = NodeCredentials(key_pem=data[KEY_FILE], cert_pem=data[CERT_FILE], root_pem=data[ROOT_FILE])
    if not key_matches_cert(creds.key_pem, creds.cert_pem):
        raise CertificateError(f"{paths[KEY_FILE]} does not match the certificate in {paths[CERT_FILE]}")
    return creds


# --------------------------------------------------------------------------- the key at rest

#: A manager's node key is sealed on disk with its key-encryption key (``shoal.statekeys``):
#: with autolock, a stolen disk holds no usable TLS key. The daemon registers the sealer for its
#: certificates directory once it has opened its keys, so every writer of the credentials (init,
#: join, renewal, role change) seals without knowing about autolock. Workers register nothing
#: and keep a plain PEM key, as in Swarm.
_key_sealers: dict[Path, KeySealer] = {}
SEALED_KEY_LABEL = b"SHOAL SEALED PRIVATE KEY"
_KEY_CONTEXT = b"shoal node key"


class KeySealer(Protocol):
    """What seals the node key: ``shoal.statekeys.Sealer``."""

    def seal(self, data: bytes, context: bytes = b"") -> bytes: ...

    def open(self, blob: bytes, context: bytes = b"") -> bytes: ...


class KeySealedError(ValueError):
    """The node key on disk is sealed and this process holds no key that opens it."""


def seal_keys(directory: Path, sealer: KeySealer | None) -> None:
    """From now on, write (and read) the node key in ``directory`` sealed by ``sealer``
    (None: in clear)."""
    if sealer is None:
        _key_sealers.pop(directory.resolve(), None)
    else:
        _key_sealers[directory.resolve()] = sealer


def key_is_sealed(directory: Path) -> bool:
    """Whether the node key file in ``directory`` is sealed (needs a KEK to be read)."""
    try:
        return (directory / KEY_FILE).read_bytes().startswith(b"-----BEGIN " + SEALED_KEY_LABEL)
    except FileNotFoundError:
        return False


def _seal_key(directory: Path, key_pem: bytes) -> bytes:
    sealer = _key_sealers.get(directory.resolve())
    if sealer is None:
        return key_pem
    body = base64.encodebytes(sealer.seal(key_pem, _KEY_CONTEXT))
    return (
        b"-----BEGIN " + SEALED_KEY_LABEL + b"-----\n" + body + b"-----END " + SEALED_KEY_LABEL + b"-----\n"
    )


def _open_key(path: Path, raw: bytes) -> bytes:
    head = b"-----BEGIN " + SEALED_KEY_LABEL + b"-----"
    if not raw.startswith(head):
        return raw
    sealer = _key_sealers.get(path.parent.resolve())
    if sealer is None:
        # Without autolock the key-encryption key lies beside the certificates (not a secret
        # from whoever can read this directory): any reader of the files may open the key.
        from shoal import statekeys

        sealer = statekeys.unlocked_node_key_sealer(path.parent.parent)
    if sealer is None:
        raise KeySealedError(
            f"{path} is sealed by the manager's unlock key (autolock): unlock the manager first"
        )
    body = raw[len(head) :].split(b"-----END", 1)[0]
    try:
        return sealer.open(base64.decodebytes(body), _KEY_CONTEXT)
    except (ValueError, binascii.Error):
        raise KeySealedError(f"{path} does not open with this manager's key-encryption key") from None
