"""The ``--plugin-opt store.KEY=VALUE`` settings of the etcd store, validated up front."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shoal_store_etcd.client import Credentials

_KNOWN = ("endpoints", "ca", "cert", "key", "prefix", "lease-ttl", "timeout-ms")
_REQUIRED = ("endpoints", "ca", "cert", "key")
#: Said when the store is used without the options it cannot do without.
NEEDS = (
    "the etcd store needs --plugin-opt store.endpoints=HOST:PORT,... and store.ca, store.cert, "
    "store.key (PEM files for mutual TLS with etcd) on every manager's daemon"
)


@dataclass(frozen=True)
class EtcdOptions:
    #: ``host:port`` of the etcd members (comma-separated in the option); empty: not configured
    #: (``shoal plugin ls`` builds the plugin without options; ``start`` then refuses).
    endpoints: tuple[str, ...]
    credentials: Credentials | None
    #: Every key of this swarm starts with it: one swarm per prefix.
    prefix: str = "/shoal"
    #: Seconds a manager's lease lives without a keep-alive: a leader that cannot reach etcd
    #: for this long loses leadership (etcd's minimum is about 2).
    lease_ttl: int = 2
    #: Deadline of one etcd call (a write with etcd's quorum lost fails after it).
    timeout_ms: int = 2000

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> EtcdOptions:
        """Build from plugin options; a missing or bad one raises ``ValueError`` naming it."""
        for key in options:
            if key not in _KNOWN:
                raise ValueError(
                    f"unknown store option {key!r} for the etcd store (known: {', '.join(_KNOWN)})"
                )
        missing = [k for k in _REQUIRED if not options.get(k)]
        if len(missing) == len(_REQUIRED):
            return cls((), None)
        if missing:
            raise ValueError(f"{NEEDS}; missing: {', '.join(missing)}")
        files = {}
        for name in ("ca", "cert", "key"):
            try:
                files[name] = Path(options[name]).read_bytes()
            except OSError as exc:
                raise ValueError(
                    f"store option {name}: cannot read {options[name]}: {exc.strerror}"
                ) from None
        endpoints = tuple(e.strip() for e in options["endpoints"].split(",") if e.strip())
        prefix = options.get("prefix", "/shoal").rstrip("/") or "/shoal"
        numbers = {}
        for name, default in (("lease-ttl", 2), ("timeout-ms", 2000)):
            raw = options.get(name, str(default))
            try:
                numbers[name] = int(raw)
            except ValueError:
                raise ValueError(f"store option {name} must be a positive integer, got {raw!r}") from None
            if numbers[name] < 1:
                raise ValueError(f"store option {name} must be a positive integer, got {raw!r}")
        return cls(
            endpoints,
            Credentials(files["ca"], files["cert"], files["key"]),
            prefix,
            numbers["lease-ttl"],
            numbers["timeout-ms"],
        )
