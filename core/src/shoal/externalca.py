"""``--external-ca`` values: parsing the flag, choosing the CA plugin that serves them, and
converting between the cluster object and the CA provider's view.

The flag is docker's: ``protocol=P,url=https://HOST:PORT/...[,cacert=FILE][,k=v...]``,
repeatable (tried in order). The CLI reads ``cacert`` files and sends their PEM.

Which protocols exist is not the kernel's business: each CA plugin's provider class declares
the ones it serves (``external_ca_protocols``, see ``shoal.roles.ca``), and ``swarm init``
picks the installed CA plugin that serves the protocols given. The kernel names no plugin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shoal.loader import DeclaredPlugin, PluginError
from shoal.proto import objects_pb2 as pb
from shoal.roles.ca import ExternalCA, external_ca_protocols
from shoal.specs import SpecError


def parse_flag(text: str) -> dict[str, str]:
    """One ``--external-ca`` value as a dict; a one-line error for a malformed one."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        if not sep:
            raise SpecError(f'invalid --external-ca "{text}": "{part}" is not KEY=VALUE')
        fields[key] = value.strip()
    if not fields.get("protocol"):
        raise SpecError(
            f'invalid --external-ca "{text}": protocol=NAME is missing (the protocols installed CA '
            'plugins serve: "shoal plugin ls" lists the CA plugins)'
        )
    url = fields.get("url", "")
    if not url.startswith("https://"):
        raise SpecError(
            f'invalid --external-ca "{text}": url must be an https:// address of the CA\'s sign API'
        )
    return fields


def from_request(values: Iterable[Mapping[str, Any]]) -> list[ExternalCA]:
    """What the CLI sent (protocol, url, cacert PEM, other options) as provider values."""
    cas = []
    for value in values:
        options = {
            k: str(v) for k, v in value.items() if k not in ("protocol", "url", "cacert", "cacert_pem")
        }
        cas.append(
            ExternalCA(
                protocol=str(value["protocol"]),
                url=str(value["url"]),
                cacert_pem=str(value.get("cacert_pem") or "").encode(),
                options=options,
            )
        )
    return cas


def to_spec(cas: Sequence[ExternalCA]) -> list[pb.ExternalCA]:
    return [
        pb.ExternalCA(protocol=c.protocol, url=c.url, options=c.options, ca_cert=c.cacert_pem) for c in cas
    ]


def from_spec(cluster: pb.Cluster) -> list[ExternalCA]:
    return [
        ExternalCA(protocol=c.protocol, url=c.url, cacert_pem=c.ca_cert, options=dict(c.options))
        for c in cluster.spec.ca_config.external_cas
    ]


def _wanted(cas: Sequence[ExternalCA]) -> list[str]:
    """The distinct protocols of ``cas`` in the order given."""
    return list(dict.fromkeys(c.protocol for c in cas))


def _flags(protocols: Sequence[str]) -> str:
    return " and ".join(f"--external-ca protocol={p}" for p in protocols)


def _offer(installed: Sequence[DeclaredPlugin]) -> str:
    """What the installed CA plugins serve, for an error line (and which could not be read)."""
    served = [
        f'{p} (plugin "{d.name}")'
        for d in installed
        if d.provider_class is not None
        for p in external_ca_protocols(d.provider_class)
    ]
    text = (
        "installed CA plugins serve: " + ", ".join(served)
        if served
        else ("no installed CA plugin serves any --external-ca protocol")
    )
    unreadable = [f'"{d.name}" ({d.error})' for d in installed if d.provider_class is None]
    if unreadable:
        text += "; unusable CA plugins: " + ", ".join(unreadable)
    return text


def choose_ca_plugin(
    cas: Sequence[ExternalCA], installed: Sequence[DeclaredPlugin], requested: str | None = None
) -> str:
    """The CA plugin for ``swarm init --external-ca``: the one whose provider class serves every
    protocol given. ``requested`` (``--plugin ca=NAME``) must serve them; otherwise exactly one
    installed plugin must. Every refusal is one line listing what the installed plugins serve.
    """
    wanted = _wanted(cas)
    if requested is not None:
        chosen = next((d for d in installed if d.name == requested), None)
        if chosen is None or chosen.provider_class is None:
            return requested  # the loader reports an unknown or broken plugin with its own line
        served = external_ca_protocols(chosen.provider_class)
        if not set(wanted) <= set(served):
            raise PluginError(
                f"{_flags(wanted)}: the {chosen.label} does not serve "
                f"{'it' if len(wanted) == 1 else 'them all'} (it serves "
                f"{', '.join(served) or 'no protocol: it signs by itself'}); {_offer(installed)}"
            )
        return requested
    fits = [
        d
        for d in installed
        if d.provider_class is not None and set(wanted) <= set(external_ca_protocols(d.provider_class))
    ]
    if not fits:
        verb = "serves it" if len(wanted) == 1 else "serves them all"
        raise PluginError(f"{_flags(wanted)}: no installed CA plugin {verb}; {_offer(installed)}")
    if len(fits) > 1:
        names = ", ".join(f'"{d.name}"' for d in fits)
        raise PluginError(
            f"{_flags(wanted)}: several installed CA plugins serve it ({names}); "
            "choose one with --plugin ca=NAME"
        )
    return fits[0].name


def check_served(cas: Sequence[ExternalCA], provider_class: type, plugin_name: str) -> None:
    """``swarm update --external-ca``: the swarm's CA plugin (fixed at init) must serve them.

    Raises ``SpecError`` (one line) before anything is stored, rather than recording a list the
    CA plugin would refuse (or, for a CA that signs by itself, silently ignore).
    """
    served = external_ca_protocols(provider_class)
    missing = [p for p in _wanted(cas) if p not in served]
    if missing:
        raise SpecError(
            f'{_flags(missing)}: this swarm\'s CA plugin "{plugin_name}" (chosen at swarm init) does '
            f"not serve {'it' if len(missing) == 1 else 'them'}; it serves "
            f"{', '.join(served) or 'no --external-ca protocol (it signs with the cluster root)'}"
        )
