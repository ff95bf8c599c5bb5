"""``--external-ca`` values: parsing the flag, and converting between the cluster object and
the CA provider's view.

The flag is docker's: ``protocol=cfssl,url=https://HOST:PORT/api/v1/cfssl/sign[,cacert=FILE]
[,k=v...]``, repeatable (tried in order). The CLI reads ``cacert`` files and sends their PEM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shoal.proto import objects_pb2 as pb
from shoal.roles.ca import ExternalCA
from shoal.specs import SpecError

PROTOCOLS = ("cfssl",)


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
    protocol = fields.get("protocol", "")
    if protocol not in PROTOCOLS:
        raise SpecError(f'invalid --external-ca "{text}": protocol must be cfssl')
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
