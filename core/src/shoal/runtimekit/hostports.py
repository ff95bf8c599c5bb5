"""A task's host-mode published ports, as the runtimes hand them to their engines.

``mode=host`` ports are bound by the container engine on the node where the task runs (docker's
and podman's port bindings), not by the network plugin: no routing mesh is involved. A port
without a published number gets one the engine picks, as in Swarm. Ingress ports are not here:
they are the network plugin's (``shoal.roles.network``).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.ports import protocol_name
from shoal.proto import objects_pb2 as pb


@dataclass(frozen=True)
class HostPort:
    """Bind ``published`` (0: the engine picks) on the node to ``target`` in the container."""

    protocol: str
    target: int
    published: int


def host_ports(task: pb.Task) -> list[HostPort]:
    """The ports the task's container must publish on its node."""
    if not task.HasField("endpoint"):
        return []
    return [
        HostPort(protocol_name(port), int(port.target_port), int(port.published_port))
        for port in task.endpoint.ports
        if port.publish_mode == pb.PortConfig.HOST
    ]


def docker_bindings(task: pb.Task) -> dict[str, list[dict[str, str]]]:
    """Docker's ``HostConfig.PortBindings``: ``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``."""
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in host_ports(task):
        host_port = str(port.published) if port.published else ""
        bindings.setdefault(f"{port.target}/{port.protocol}", []).append(
            {"HostIp": "", "HostPort": host_port}
        )
    return bindings


def podman_mappings(task: pb.Task) -> list[dict[str, object]]:
    """Podman's (libpod) ``portmappings``; ``host_port`` 0 lets podman pick one."""
    return [
        {"container_port": p.target, "host_port": p.published, "protocol": p.protocol}
        for p in host_ports(task)
    ]


def docker_exposed(task: pb.Task) -> list[tuple[int, str]]:
    """docker-py's ``create_container(ports=...)``: the container ports the bindings name."""
    return [(p.target, p.protocol) for p in host_ports(task)]
