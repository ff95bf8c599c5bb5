"""gRPC channel and server options shared by both sides.

- 128 MiB messages, like swarmkit (``MaxMsgSize``): raft snapshots and large assignment sets
  exceed gRPC's 4 MiB default.
- Client keepalive pings on open calls so a dead peer under a long-lived stream (a dispatcher
  session) is noticed in tens of seconds rather than at the TCP timeout; the server must then
  accept pings that often, or it answers with GOAWAY ``too_many_pings``.
"""

from __future__ import annotations

MAX_MESSAGE_BYTES = 128 << 20

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

SERVER_OPTIONS: list[tuple[str, int]] = [
    *CHANNEL_OPTIONS,
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # SO_REUSEPORT off: with it (gRPC's default) a second server on a busy port would bind
    # silently and steal half the connections instead of failing.
    ("grpc.so_reuseport", 0),
]

CLIENT_OPTIONS: list[tuple[str, int]] = [
    *CHANNEL_OPTIONS,
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]
