"""Translating between ``shoal.roles.RPCError`` and gRPC status codes.

A handler's ``RPCError`` travels as the gRPC status (code + details) plus a trailing-metadata
marker. The marker is how a client tells "the handler said UNAVAILABLE" apart from "the
connection failed" (gRPC reports both as UNAVAILABLE): only the second gets the
``cannot reach HOST:PORT:`` prefix the kernel's retry logic and users rely on.
"""

from __future__ import annotations

from typing import Any

import grpc
from shoal.plugin import RPCError, StatusCode

#: Trailing metadata key set by the server when a handler raised the status itself.
HANDLER_MARK = "shoal-handler-status"

_TO_GRPC: dict[StatusCode, grpc.StatusCode] = {
    code: grpc.StatusCode[code.name] for code in StatusCode if code is not StatusCode.OK
}
_FROM_GRPC: dict[grpc.StatusCode, StatusCode] = {v: k for k, v in _TO_GRPC.items()}

_TLS_HINTS = ("ssl", "tls", "handshake", "certificate", "tsi_", "verification")


def to_grpc(code: StatusCode) -> grpc.StatusCode:
    """The gRPC code for a handler's ``RPCError`` (``OK`` is not a failure: UNKNOWN)."""
    return _TO_GRPC.get(code, grpc.StatusCode.UNKNOWN)


def from_aio_error(error: grpc.aio.AioRpcError, target: str, method: str, timeout: float | None) -> RPCError:
    """The ``RPCError`` a caller sees for a failed gRPC call."""
    grpc_code = error.code()
    details = error.details() or ""
    trailing: Any = error.trailing_metadata() or ()
    from_handler = any(item[0] == HANDLER_MARK for item in trailing)
    code = _FROM_GRPC.get(grpc_code)
    if from_handler and code is not None:
        return RPCError(code, details)
    if grpc_code == grpc.StatusCode.UNAVAILABLE:
        lowered = details.lower()
        reason = f"TLS handshake failed: {details}" if any(h in lowered for h in _TLS_HINTS) else details
        return RPCError(StatusCode.UNAVAILABLE, f"cannot reach {target}: {reason}")
    if grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RPCError(StatusCode.DEADLINE_EXCEEDED, f"{method} on {target} timed out after {timeout}s")
    if code is None:  # RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE, DATA_LOSS: not in the role API
        return RPCError(StatusCode.UNKNOWN, f"{grpc_code.name}: {details}")
    return RPCError(code, details)
