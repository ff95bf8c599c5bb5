"""``--network`` on ``service create`` and ``--network-add``/``--network-rm`` on ``service update``.

A value is a network's name, ID or unique ID prefix, or docker's long form
``name=NET[,alias=A]...``. The spec records the network's ID (a rename-proof reference, as in
Swarm); an unknown network, one given twice, or the ingress network (the routing mesh joins a
service to it through ``--publish``, never by name) is one line and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal.manager.netobjects import find
from shoal.proto import objects_pb2 as pb
from shoal.specs import SpecError, strings
from shoal.store.memory import ReadView

_KEYS = ("name", "target", "alias")


def parse(text: str, flag: str) -> tuple[str, list[str]]:
    """``NET`` or ``name=NET,alias=A,...`` -> (reference, aliases)."""
    if "=" not in text:
        if not text.strip():
            raise SpecError(f'invalid {flag} "": give a network name or ID')
        return text.strip(), []
    ref, aliases = "", []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            raise SpecError(f'invalid {flag} "{text}": use NETWORK or name=NETWORK[,alias=NAME]')
        if not value:
            raise SpecError(f'invalid {flag} "{text}": {key} must not be empty')
        if key == "alias":
            aliases.append(value)
        elif ref:
            raise SpecError(f'invalid {flag} "{text}": the network is given twice')
        else:
            ref = value
    if not ref:
        raise SpecError(f'invalid {flag} "{text}": name=NETWORK is required')
    return ref, aliases


def resolve(view: ReadView, ref: str, flag: str) -> pb.Network:
    network = find(view.networks.all(), ref)
    if network is None:
        raise SpecError(
            f'network "{ref}" not found: create it with "shoal network create -d overlay {ref}" '
            "or see shoal network ls"
        )
    if network.spec.ingress:
        raise SpecError(
            f'invalid {flag} "{ref}": a service cannot be attached to the ingress network by name; '
            "publish a port (--publish) to use the routing mesh"
        )
    return network


def _add(view: ReadView, spec: pb.ServiceSpec, values: list[str], flag: str) -> None:
    for text in values:
        ref, aliases = parse(text, flag)
        network = resolve(view, ref, flag)
        if any(config.target == network.id for config in spec.networks):
            raise SpecError(
                f'invalid {flag} "{text}": the service is already attached to network '
                f'"{network.spec.annotations.name}"'
            )
        spec.networks.add(target=network.id, aliases=aliases)


def apply(view: ReadView, spec: pb.ServiceSpec, params: Mapping[str, Any], *, creating: bool) -> None:
    """Set ``spec.networks`` from ``--network`` (create) or ``--network-add``/``--network-rm``
    (update), resolving names against ``view``. Raises ``SpecError``."""
    if creating:
        _add(view, spec, strings(params, "networks", "--network"), "--network")
        return
    for text in strings(params, "network_rm", "--network-rm"):
        network = find(view.networks.all(), text.strip())
        target = network.id if network is not None else text.strip()
        kept = [c for c in spec.networks if c.target != target]
        if len(kept) == len(spec.networks):
            raise SpecError(f'invalid --network-rm "{text}": the service is not attached to that network')
        del spec.networks[:]
        spec.networks.extend(kept)
    _add(view, spec, strings(params, "network_add", "--network-add"), "--network-add")
