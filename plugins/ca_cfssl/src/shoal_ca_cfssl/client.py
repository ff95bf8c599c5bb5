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
    """The certificate (PEM, possibly with a chain) and key this node presents to the CA."""

    cert_pem: bytes
    key_pem: bytes


def _load_identity(context: ssl.SSLContext, identity: ClientIdentity, scratch: Path) -> None:
    """Load the client certificate into ``context``.

    ``ssl`` loads certificates only from files: they are written 0600 under ``scratch`` (the
    plugin's state dir) for the time of the call and removed at once, so no key (least of all
    the operator's bootstrap key) is left behind on disk.
    """
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=".client-", suffix=".pem", dir=scratch)
    try:
        os.fchmod(fd, 0o600)  # before any byte of the key is written
        with os.fdopen(fd, "wb") as handle:
            handle.write(identity.key_pem.rstrip(b"\n") + b"\n" + identity.cert_pem)
        context.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise ValueError(f"unusable client certificate or key for the external CA: {exc}") from None
    finally:
        Path(path).unlink(missing_ok=True)


def ssl_context(trust_pem: bytes, identity: ClientIdentity | None, scratch: Path) -> ssl.SSLContext:
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
        _load_identity(context, identity, scratch)
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
