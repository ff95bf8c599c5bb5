"""Entry point ``grpc`` in ``shoal.transport``: builds the gRPC transport provider."""

from __future__ import annotations

from shoal.plugin import PluginContext, hookimpl

from shoal_transport_grpc.transport import DEFAULT_SERVER_NAME, GrpcTransport

#: Read by ``shoal plugin ls`` for the role and API version, without building a provider.
PROVIDER_CLASS = GrpcTransport


_SWITCHES = {"on": True, "off": False}


@hookimpl
def shoal_transport_provider(context: PluginContext) -> GrpcTransport:
    """Options: ``transport.server_name``, the TLS name clients expect (default
    ``swarm-manager``); ``transport.serving-thread``, ``on`` (default) or ``off``: whether a
    server takes calls in on a thread of its own (see ``servingloop``). On by default: without
    it a manager busy with a thousand nodes takes their calls in too slowly and their sessions
    fall (100,000 replicas on 1,000 hollow nodes: every node seen not Ready; with it none, and
    the service ran in 69 s); off saves ~0.15 ms of one Raft write at a time
    (docs/benchmarks.md, "The lead's runs of 2026-12-07"). ``transport.completion-reader``,
    ``on`` (default) or ``off``: with the serving thread, whether the daemon's loop reads gRPC's
    completion events itself (``cqreader``): less CPU per stream message on a busy leader
    (100,000 replicas on 1,000 hollow nodes: leader 39.9 against 54.2 CPU s in the create, 38.4
    against 56.9 in the removal). It was off while managers elected new leaders with it; the
    cause was gRPC's wake-up socket rationing events to one per loop turn, mended in
    ``wakeups`` (docs/benchmarks.md, "gRPC's wake-up socket")."""
    return GrpcTransport(
        server_name=context.options.get("server_name", DEFAULT_SERVER_NAME),
        serving_thread=_switch(context, "serving-thread", "on"),
        completion_reader=_switch(context, "completion-reader", "on"),
    )


def _switch(context: PluginContext, name: str, default: str) -> bool:
    raw = context.options.get(name, default)
    if raw not in _SWITCHES:
        raise ValueError(f"transport option {name} must be on or off, got {raw!r}")
    return _SWITCHES[raw]
