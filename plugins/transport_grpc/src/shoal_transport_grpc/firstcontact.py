"""First contact: a call before the caller knows the cluster's root (a joining node).

The joiner dials an address a user typed. Whatever answers there, the user must learn in one
line what it was, not wait for a bare "timed out" or read "cannot reach ADDR:" with no reason:

- nothing listens: ``cannot reach ADDR: connection refused`` (or the system's reason);
- a TCP peer that accepts but never answers the TLS hello (a plain TCP listener):
  ``no TLS handshake from ADDR within 10s``;
- a peer that answers, but not as a shoal manager (an HTTP server, a TLS server with no CA
  chain or with another name, a gRPC server without shoal's methods):
  ``ADDR did not answer as a shoal manager (...)``, as soon as it has answered.

The root the peer presents is learnt without verifying it (as Swarm's joiner does with
``InsecureSkipVerify``); the caller checks it against the join token's digest before trusting
anything it received.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import tempfile
from pathlib import Path

import grpc
from shoal.plugin import RPCError, StatusCode

from shoal_transport_grpc import anonymous, errors

NOT_A_MANAGER = "did not answer as a shoal manager"


def _within(timeout: float | None) -> str:
    return f" within {timeout:g}s" if timeout else ""


def _reason(exc: BaseException) -> str:
    """The system's words for a failed connection, lower case, without errno noise."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


@functools.cache
def unverifying_context() -> ssl.SSLContext:
    """A TLS client context that verifies nothing and presents the anonymous certificate (a
    shoal server requires a client certificate at the handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    key_pem, cert_pem = anonymous.client_material()
    with tempfile.TemporaryDirectory() as tmp:  # ssl loads key pairs from files only
        (Path(tmp) / "anon.pem").write_bytes(key_pem + cert_pem)
        context.load_cert_chain(Path(tmp) / "anon.pem")
    return context


async def presented_root(target: str, timeout: float | None) -> bytes:  # noqa: ASYNC109
    """The last certificate of the chain ``target`` presents (shoal servers send their root).

    TCP connect and TLS handshake are timed separately (together within ``timeout``) so the
    error says which of them the peer failed."""
    host, _, port = target.rpartition(":")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        # asyncio.timeout, not wait_for (here and below): on Python 3.11 wait_for returns when its
        # inner wait is done as the caller is cancelled, and the cancelled caller went on.
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except TimeoutError:
        raise RPCError(
            StatusCode.UNAVAILABLE, f"cannot reach {target}: no TCP connection{_within(timeout)}"
        ) from None
    except (OSError, ValueError) as exc:
        raise RPCError(StatusCode.UNAVAILABLE, f"cannot reach {target}: {_reason(exc)}") from None
    try:
        left = None if timeout is None else max(0.0, timeout - (loop.time() - started))
        try:
            async with asyncio.timeout(left):
                await writer.start_tls(unverifying_context())
        except TimeoutError:
            raise RPCError(
                StatusCode.DEADLINE_EXCEEDED, f"no TLS handshake from {target}{_within(timeout)}"
            ) from None
        except ssl.SSLError as exc:
            raise RPCError(
                StatusCode.UNAVAILABLE,
                f"{target} {NOT_A_MANAGER} (its answer to a TLS hello is not TLS: {exc.reason or exc})",
            ) from None
        except (OSError, EOFError) as exc:
            raise RPCError(
                StatusCode.UNAVAILABLE,
                f"{target} {NOT_A_MANAGER} (it closed the connection during the TLS handshake: "
                f"{_reason(exc)})",
            ) from None
        ssl_object = writer.get_extra_info("ssl_object")
        # Public as SSLObject.get_unverified_chain() from Python 3.13; the same call before.
        getter = getattr(ssl_object, "get_unverified_chain", None) or ssl_object._sslobj.get_unverified_chain
        chain = getter() or []
    finally:
        writer.close()
    if len(chain) < 2:
        raise RPCError(
            StatusCode.UNAVAILABLE,
            f"{target} {NOT_A_MANAGER} (its TLS certificate comes without the CA that issued it; "
            "a shoal manager presents its swarm's root)",
        )
    pem: bytes = chain[-1].public_bytes(ssl._ssl.ENCODING_PEM).encode()  # type: ignore[attr-defined]
    return pem


def call_error(error: grpc.aio.AioRpcError, target: str, method: str, timeout: float | None) -> RPCError:
    """A failed first-contact call: a shoal handler's own error passes as it is; anything else
    means the peer did TLS but is not a shoal manager (wrong certificate name, not HTTP/2, no
    such method)."""
    trailing = error.trailing_metadata() or ()
    if any(item[0] == errors.HANDLER_MARK for item in trailing):  # type: ignore[index]
        return errors.from_aio_error(error, target, method, timeout)
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RPCError(StatusCode.DEADLINE_EXCEEDED, f"{target} {NOT_A_MANAGER}{_within(timeout)}")
    details = (error.details() or error.code().name).strip()
    return RPCError(StatusCode.UNAVAILABLE, f"{target} {NOT_A_MANAGER} ({details})")
