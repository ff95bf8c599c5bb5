"""A small asyncio client for etcd's v3 gRPC API over mutual TLS (KV, Watch, Lease).

One gRPC channel per endpoint; a call that finds its endpoint unavailable moves on to the next
one (etcd forwards writes to its leader itself, so any member will do). Every unary call has a
deadline: with etcd's quorum lost, writes hang inside etcd, and the store must fail fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from shoal_store_etcd import etcdapi_pb2 as pb

T = TypeVar("T", bound=Message)

_KV = "/etcdserverpb.KV/"
_WATCH = "/etcdserverpb.Watch/Watch"
_LEASE = "/etcdserverpb.Lease/"
#: Failures worth trying on another endpoint (the member is down, or cut off from its quorum).
_RETRY_ELSEWHERE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class EtcdError(Exception):
    """A call to etcd failed (every endpoint was tried); the message says which and why."""


@dataclass(frozen=True)
class Credentials:
    """PEM: the CA that signed etcd's server certificates, and this client's certificate/key."""

    ca: bytes
    cert: bytes
    key: bytes


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


class EtcdClient:
    def __init__(self, endpoints: list[str], credentials: Credentials, *, timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints given")
        self.endpoints = endpoints
        self.timeout = timeout
        creds = grpc.ssl_channel_credentials(credentials.ca, credentials.key, credentials.cert)
        self._channels = [grpc.aio.secure_channel(e, creds) for e in endpoints]
        self._current = 0

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channels[self._current]

    def rotate(self) -> None:
        """Use the next endpoint (after a stream on this one broke)."""
        self._current = (self._current + 1) % len(self._channels)

    async def _unary(self, method: str, request: Message, reply: type[T], timeout: float | None = None) -> T:  # noqa: ASYNC109
        last: grpc.aio.AioRpcError | None = None
        for _ in range(len(self._channels)):
            call = self.channel.unary_unary(
                method, request_serializer=_serialize, response_deserializer=reply.FromString
            )
            try:
                return await call(request, timeout=timeout or self.timeout)  # type: ignore[no-any-return]
            except grpc.aio.AioRpcError as exc:
                last = exc
                if exc.code() not in _RETRY_ELSEWHERE:
                    break
                self.rotate()
        assert last is not None
        raise EtcdError(f"etcd {method.rsplit('/', 1)[-1]} failed: {last.code().name}: {last.details()}")

    async def range(self, key: bytes, *, prefix: bool = False) -> pb.RangeResponse:
        request = pb.RangeRequest(key=key, range_end=prefix_end(key) if prefix else b"")
        return await self._unary(_KV + "Range", request, pb.RangeResponse)

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> pb.PutResponse:
        return await self._unary(
            _KV + "Put", pb.PutRequest(key=key, value=value, lease=lease), pb.PutResponse
        )

    async def delete(self, key: bytes, *, prefix: bool = False) -> pb.DeleteRangeResponse:
        request = pb.DeleteRangeRequest(key=key, range_end=prefix_end(key) if prefix else b"")
        return await self._unary(_KV + "DeleteRange", request, pb.DeleteRangeResponse)

    async def txn(self, request: pb.TxnRequest, timeout: float | None = None) -> pb.TxnResponse:  # noqa: ASYNC109
        return await self._unary(_KV + "Txn", request, pb.TxnResponse, timeout)

    async def compact(self, revision: int) -> None:
        """Drop etcd's history before ``revision`` (every key keeps its value as of it)."""
        await self._unary(_KV + "Compact", pb.CompactionRequest(revision=revision), pb.CompactionResponse)

    async def grant(self, ttl: int) -> int:
        reply = await self._unary(_LEASE + "LeaseGrant", pb.LeaseGrantRequest(TTL=ttl), pb.LeaseGrantResponse)
        if reply.error:
            raise EtcdError(f"etcd refused a lease: {reply.error}")
        return int(reply.ID)

    async def revoke(self, lease: int) -> None:
        await self._unary(_LEASE + "LeaseRevoke", pb.LeaseRevokeRequest(ID=lease), pb.LeaseRevokeResponse)

    def keepalive(self, requests: AsyncIterator[pb.LeaseKeepAliveRequest]) -> Any:
        """A keep-alive stream on the current endpoint: send requests, read TTLs."""
        call = self.channel.stream_stream(
            _LEASE + "LeaseKeepAlive",
            request_serializer=_serialize,
            response_deserializer=pb.LeaseKeepAliveResponse.FromString,
        )
        return call(requests)

    def watch(self, requests: AsyncIterator[pb.WatchRequest]) -> Any:
        """A watch stream on the current endpoint."""
        call = self.channel.stream_stream(
            _WATCH, request_serializer=_serialize, response_deserializer=pb.WatchResponse.FromString
        )
        return call(requests)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
