"""One JSON POST to a cfssl endpoint over (mutual) TLS, bounded in time and in size.

cfssl answers every API call with ``{"success", "result", "errors", "messages"}``, with HTTP 200
on success and usually 400 on a refusal, so the body is parsed whatever the status. What can go
wrong is split in two, because the caller treats them differently:

- ``Unreachable``: no usable answer (connection refused, TLS handshake refused, timeout, a body
  too large or not cfssl's JSON). Transient: try the next URL, retry later.
- ``Refused``: cfssl answered ``success: false`` (a policy refusal, a CSR it cannot use). That
  is cfssl's decision, shown to the operator with cfssl's own messages.

The body is read as a stream and the read stops past ``MAX_RESPONSE_BYTES``: a misbehaving or
hostile server cannot make the manager buffer an unbounded answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

#: Each URL gets this long, connection and TLS handshake included (Swarm's 5s).
TIMEOUT_SECONDS = 5.0
#: Swarm's ``CertificateMaxSize`` is 256 KiB for the certificate; the JSON envelope around it
#: (and a possible bundle) gets room to spare.
MAX_RESPONSE_BYTES = 1024 * 1024


class Unreachable(Exception):
    """No usable answer from the endpoint; the message is the reason (one line)."""


class Refused(Exception):
    """cfssl answered ``success: false``; the message joins cfssl's error messages."""


@dataclass(frozen=True)
class ClientIdentity:
    """Where the client certificate and key were written for ``ssl`` (it only loads files)."""

    cert_file: Path
    key_file: Path


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file: it may hold a private key."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class IdentityFiles:
    """Keeps the node's TLS certificate and key on disk for ``ssl``, rewritten when they change.

    The node certificate is renewed (with a new key) while the manager runs; the files follow
    the PEMs they were written from, so the next call presents the current certificate.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._written: tuple[bytes, bytes] | None = None

    def sync(self, cert_pem: bytes, key_pem: bytes) -> ClientIdentity:
        identity = ClientIdentity(self.directory / "client.crt", self.directory / "client.key")
        if self._written != (cert_pem, key_pem) or not identity.key_file.exists():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_private(identity.key_file, key_pem)
            _write_private(identity.cert_file, cert_pem)
            self._written = (cert_pem, key_pem)
        return identity


def ssl_context(trust_pem: bytes, identity: ClientIdentity | None) -> ssl.SSLContext:
    """TLS 1.2+ client context: the server must chain to ``trust_pem`` (system roots if empty)."""
    if trust_pem:
        try:
            context = ssl.create_default_context(cadata=trust_pem.decode())
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(f"invalid CA certificate PEM to verify the external CA with: {exc}") from None
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        try:
            context.load_cert_chain(identity.cert_file, identity.key_file)
        except ssl.SSLError as exc:
            raise ValueError(f"unusable client certificate or key for the external CA: {exc}") from None
    return context


def _reason(exc: BaseException) -> str:
    """A one-line reason from an httpx/ssl/OS error: the innermost cause says most.

    httpx wraps "connection refused" as "All connection attempts failed"; the OS error it
    chains to names the actual fault.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 16:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for cause in reversed(chain):
        if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError) and cause.errno:
            return os.strerror(cause.errno)
        text = " ".join(str(cause).split())
        if text:
            return text
    return type(exc).__name__


async def post_json(
    url: str,
    body: dict[str, Any],
    context: ssl.SSLContext,
    *,
    time_limit: float = TIMEOUT_SECONDS,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> Any:
    """POST ``body`` to ``url``; cfssl's ``result`` on success, else ``Unreachable``/``Refused``."""
    try:
        async with asyncio.timeout(time_limit):
            raw, status = await _exchange(url, body, context, time_limit, max_bytes)
    except TimeoutError:
        raise Unreachable(f"no answer within {time_limit:g}s") from None
    except httpx.HTTPError as exc:
        raise Unreachable(_reason(exc)) from None
    except (OSError, ssl.SSLError) as exc:
        raise Unreachable(_reason(exc)) from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise Unreachable(f"HTTP {status}, not a cfssl JSON answer") from None
    if not isinstance(answer, dict) or "success" not in answer:
        raise Unreachable(f"HTTP {status}, not a cfssl JSON answer (no 'success' field)")
    if answer["success"] is not True:
        raise Refused(_messages(answer.get("errors")) or f"HTTP {status}, success false without errors")
    if status != 200:
        raise Unreachable(f"HTTP {status} with success true")
    return answer.get("result")


async def _exchange(
    url: str, body: dict[str, Any], context: ssl.SSLContext, time_limit: float, max_bytes: int
) -> tuple[bytes, int]:
    async with (
        httpx.AsyncClient(verify=context, timeout=time_limit, follow_redirects=False) as client,
        client.stream("POST", url, json=body) as response,
    ):
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise Unreachable(f"answer of {int(declared)} bytes, more than the {max_bytes} bytes allowed")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise Unreachable(f"answer larger than the {max_bytes} bytes allowed")
            chunks.append(chunk)
        return b"".join(chunks), response.status_code


def _messages(errors: Any) -> str:
    """cfssl's ``errors`` list as one line: ``message (code N); ...``."""
    if not isinstance(errors, list):
        return ""
    parts = []
    for error in errors:
        if isinstance(error, dict):
            message = " ".join(str(error.get("message", "")).split())
            code = error.get("code")
            parts.append(f"{message} (code {code})" if code is not None else message)
        else:
            parts.append(" ".join(str(error).split()))
    return "; ".join(p for p in parts if p)
