"""The aws plugin's options (``--plugin-opt secrets.aws.KEY=VALUE``) and the boto3 client they make.

Why these rules: the value crosses the network between the leader and Secrets Manager, so the
endpoint must be HTTPS with its certificate verified (``aws.ca-bundle`` names a CA file for a
private endpoint); plain HTTP only with ``aws.allow-http=true``, meant for a local test server.
Every call is bounded (``aws.timeout`` seconds to connect and to read, one retry) so a backend
that is down makes a task fail with a clear line instead of hanging the leader's dispatcher.
Credentials never come from an option (a command line is visible in ``ps``): boto3's usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in the daemon's environment, ``aws.profile``
from the shared credentials file, an instance role).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config

OPTION_PREFIX = "aws."
KNOWN_OPTIONS = ("endpoint-url", "region", "profile", "ca-bundle", "timeout", "allow-http", "name-prefix")
DEFAULT_TIMEOUT = 5.0
DEFAULT_NAME_PREFIX = "shoal"


class AwsOptionError(ValueError):
    """A ``secrets.aws.*`` option is wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class AwsSettings:
    """Where the backend is and how long to wait for it."""

    #: None until given: checked when the backend is first used, so ``plugin ls`` and daemons
    #: that never use the aws driver do not need AWS settings.
    region: str | None
    endpoint_url: str | None = None
    profile: str | None = None
    ca_bundle: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    name_prefix: str = DEFAULT_NAME_PREFIX

    @property
    def where(self) -> str:
        """How error lines name the backend."""
        if self.endpoint_url:
            return f"aws secrets backend at {self.endpoint_url}"
        return f"aws secrets backend at AWS Secrets Manager ({self.region or 'no region'})"

    @classmethod
    def from_options(cls, options: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> AwsSettings:
        """Read the ``aws.*`` keys of the secrets role's options; other secrets plugins' keys are
        left alone (the options of a role go to every secrets plugin the daemon builds)."""
        ours = {k[len(OPTION_PREFIX) :]: v.strip() for k, v in options.items() if k.startswith(OPTION_PREFIX)}
        unknown = sorted(set(ours) - set(KNOWN_OPTIONS))
        if unknown:
            raise AwsOptionError(
                f"unknown option secrets.aws.{unknown[0]}; known: "
                + ", ".join(f"secrets.aws.{k}" for k in KNOWN_OPTIONS)
            )
        region = ours.get("region") or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None
        endpoint = ours.get("endpoint-url") or None
        allow_http = _flag(ours.get("allow-http", "false"))
        if endpoint is not None:
            _check_endpoint(endpoint, allow_http)
        bundle = ours.get("ca-bundle") or None
        if bundle is not None and not Path(bundle).is_file():
            raise AwsOptionError(
                f"secrets.aws.ca-bundle={bundle}: no such file; give a PEM file of CA certificates"
            )
        return cls(
            region=region,
            endpoint_url=endpoint,
            profile=ours.get("profile") or None,
            ca_bundle=bundle,
            timeout=_timeout(ours.get("timeout")),
            name_prefix=_name_prefix(ours.get("name-prefix") or DEFAULT_NAME_PREFIX),
        )

    def client(self) -> Any:
        """A Secrets Manager client (no network call yet): verified TLS, bounded waits."""
        if self.region is None:
            raise AwsOptionError(
                "no AWS region: give the daemon --plugin-opt secrets.aws.region=REGION "
                "(or AWS_REGION in its environment)"
            )
        session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
        config = Config(
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            retries={"total_max_attempts": 2, "mode": "standard"},
        )
        return session.client(
            "secretsmanager",
            endpoint_url=self.endpoint_url,
            verify=self.ca_bundle if self.ca_bundle else True,
            config=config,
        )


def _check_endpoint(endpoint: str, allow_http: bool) -> None:
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise AwsOptionError(f"secrets.aws.endpoint-url={endpoint}: not a URL; give https://HOST[:PORT]")
    if parsed.scheme == "http" and not allow_http:
        raise AwsOptionError(
            f"secrets.aws.endpoint-url={endpoint}: secret values would cross the network in clear; "
            "use https:// (or --plugin-opt secrets.aws.allow-http=true for a local test server)"
        )


def _flag(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no", ""):
        return False
    raise AwsOptionError(f"secrets.aws.allow-http={value}: give true or false")


def _timeout(value: str | None) -> float:
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 300:
        raise AwsOptionError(f"secrets.aws.timeout={value}: give a number of seconds between 0 and 300")
    return seconds


def _name_prefix(value: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_+=.@-")
    if not set(value) <= allowed or len(value) > 200:
        raise AwsOptionError(
            f"secrets.aws.name-prefix={value}: AWS secret names take letters, digits and /_+=.@- only"
        )
    return value.strip("/")
