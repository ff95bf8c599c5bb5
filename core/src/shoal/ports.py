"""Published ports: reading ``--publish`` values and showing ports the way docker does.

Parsing is done on the manager (the control API applies it to the spec, so every client gets
the same one-line errors); the CLI passes the strings through. Two syntaxes, as docker:

- short: ``[PUBLISHED:]TARGET[/PROTOCOL]`` (``8080:80``, ``80``, ``5353:53/udp``);
- long: ``published=8080,target=80,protocol=tcp|udp,mode=ingress|host``.

A port with no published number is allocated by the manager (ingress, from 30000-32767) or left
for the engine to choose on the node (host mode), as in Swarm.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from shoal.proto import objects_pb2 as pb

PROTOCOLS = {"tcp": pb.PortConfig.TCP, "udp": pb.PortConfig.UDP}
MODES = {"ingress": pb.PortConfig.INGRESS, "host": pb.PortConfig.HOST}
_PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
_EXAMPLE = "give PUBLISHED:TARGET[/udp] or published=8080,target=80[,protocol=udp][,mode=host]"


class PublishError(ValueError):
    """A ``--publish`` value is invalid; the message is one line naming the flag and the fix."""


def protocol_name(port: pb.PortConfig) -> str:
    return _PROTOCOL_NAMES.get(port.protocol, "sctp")


def _port_number(text: str, what: str, flag: str, raw: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise PublishError(f'invalid {flag} "{raw}": the {what} port must be a number from 1 to 65535')
    return int(text)


def _protocol(text: str, flag: str, raw: str) -> pb.PortConfig.Protocol.ValueType:
    name = text.strip().lower()
    if name not in PROTOCOLS:
        raise PublishError(f'invalid {flag} "{raw}": protocol "{text}" is not supported; use tcp or udp')
    return PROTOCOLS[name]


def parse_publish(raw: str, flag: str = "--publish") -> pb.PortConfig:
    """One ``--publish`` value as a ``PortConfig`` (``published_port`` 0 when not given)."""
    if not isinstance(raw, str) or not raw.strip():
        raise PublishError(f'invalid {flag} "{raw}": {_EXAMPLE}')
    if "=" in raw:
        return _parse_long(raw, flag)
    text, _, proto = raw.strip().partition("/")
    port = pb.PortConfig(protocol=_protocol(proto, flag, raw) if proto else pb.PortConfig.TCP)
    parts = text.split(":")
    if len(parts) > 2 or "-" in text:
        raise PublishError(f'invalid {flag} "{raw}": {_EXAMPLE} (one port each; no addresses or ranges)')
    if len(parts) == 2:
        port.published_port = _port_number(parts[0], "published", flag, raw)
    port.target_port = _port_number(parts[-1], "target", flag, raw)
    return port


def _parse_long(raw: str, flag: str) -> pb.PortConfig:
    port = pb.PortConfig()
    seen: set[str] = set()
    for field in raw.split(","):
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if not sep or key in seen:
            reason = f'"{key}" given twice' if key in seen else f'"{field}" is not KEY=VALUE'
            raise PublishError(f'invalid {flag} "{raw}": {reason}')
        seen.add(key)
        if key == "published":
            port.published_port = _port_number(value, "published", flag, raw)
        elif key == "target":
            port.target_port = _port_number(value, "target", flag, raw)
        elif key == "protocol":
            port.protocol = _protocol(value, flag, raw)
        elif key == "mode":
            mode = value.strip().lower()
            if mode not in MODES:
                raise PublishError(
                    f'invalid {flag} "{raw}": mode "{value}" is not supported; use ingress or host'
                )
            port.publish_mode = MODES[mode]
        else:
            raise PublishError(
                f'invalid {flag} "{raw}": unknown key "{key}"; use published, target, protocol, mode'
            )
    if "target" not in seen:
        raise PublishError(f'invalid {flag} "{raw}": target is required (the port inside the container)')
    return port


def _key(port: pb.PortConfig) -> tuple[int, int, int, int]:
    return (port.target_port, port.protocol, port.published_port, port.publish_mode)


def apply(
    current: Sequence[pb.PortConfig], add: Iterable[str], remove: Iterable[str], add_flag: str
) -> list[pb.PortConfig]:
    """``current`` with the ``--publish-rm`` values (matched by target port and protocol, as
    docker does) taken out and the ``--publish``/``--publish-add`` values put in (replacing a
    port with the same published number and protocol). Refuses a published port given twice."""
    removed = [parse_publish(r, "--publish-rm") for r in remove]
    kept = [
        p
        for p in current
        if not any(p.target_port == r.target_port and p.protocol == r.protocol for r in removed)
    ]
    added = [parse_publish(a, add_flag) for a in add]
    replaced = {(p.protocol, p.published_port) for p in added if p.published_port}
    ports = [p for p in kept if (p.protocol, p.published_port) not in replaced] + added
    seen: set[tuple[int, int]] = set()
    for port in ports:
        key = (port.protocol, port.published_port)
        if port.published_port and key in seen:
            raise PublishError(
                f"port {port.published_port}/{protocol_name(port)} is published twice in {add_flag}: "
                "give each published port once"
            )
        seen.add(key)
    return sorted(ports, key=_key)


def describe(port: pb.PortConfig) -> str:
    """``*:8080->80/tcp`` (docker's PORTS text; ``*:0`` never shows: unallocated is blank)."""
    return f"*:{port.published_port}->{port.target_port}/{protocol_name(port)}"


def ls_text(ports: Iterable[pb.PortConfig]) -> str:
    """``service ls`` PORTS: the ingress ports only, as docker shows them."""
    return ", ".join(
        describe(p) for p in ports if p.publish_mode == pb.PortConfig.INGRESS and p.published_port
    )


def ps_text(ports: Iterable[pb.PortConfig]) -> str:
    """``service ps`` PORTS: a task's host-mode ports (those bound on its node)."""
    return ", ".join(describe(p) for p in ports if p.publish_mode == pb.PortConfig.HOST and p.published_port)
