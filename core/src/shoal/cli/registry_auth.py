"""``--with-registry-auth``: the client's credentials for an image's registry, as ``docker login``
stored them.

docker keeps them in ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``) under
``auths``, keyed by registry (``host[:port]``, sometimes as a URL; Docker Hub's key is
``https://index.docker.io/v1/``), each with ``auth`` (base64 of ``user:password``) or
``username``/``password``, or an ``identitytoken``. Credentials kept by a credential helper
(``credsStore``, ``credHelpers``) are not read: the error says so.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from shoal.cli.errors import fail

if TYPE_CHECKING:  # pathlib only with --with-registry-auth: not on every create's start-up
    from pathlib import Path

REGISTRY_AUTH_HELP = (
    "Send registry authentication details (from docker login) to the nodes that run the tasks."
)
DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "docker.io"}


def registry_credentials(image: str) -> dict[str, str]:
    """``credentials_for(image)``, or exit 2 with its one line when there are none to send."""
    try:
        return credentials_for(image)
    except RegistryAuthError as exc:
        fail(str(exc), 2)


class RegistryAuthError(Exception):
    """One line: which registry, what is missing, how to fix it."""


def registry_of(image: str) -> str:
    """The registry host of ``image`` (docker's rule: a first component with ``.`` or ``:``, or
    ``localhost``, names a registry; anything else is on Docker Hub)."""
    first, slash, _ = image.partition("/")
    if slash and (any(c in first for c in ".:") or first == "localhost" or first.lower() != first):
        return DOCKER_HUB if first in _HUB_ALIASES else first
    return DOCKER_HUB


def config_path() -> Path:
    from pathlib import Path

    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def _key_registry(key: str) -> str:
    """An ``auths`` key as a registry host: ``https://host:port/v1/`` → ``host:port``."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in _HUB_ALIASES else host


def credentials_for(image: str) -> dict[str, str]:
    """docker's AuthConfig for ``image``'s registry from the client's docker config."""
    registry = registry_of(image)
    path = config_path()
    try:
        config: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise RegistryAuthError(
            f"--with-registry-auth: no credentials for {registry}: {path} does not exist "
            f"(log in with `docker login {registry}`, or set DOCKER_CONFIG)"
        ) from None
    except (OSError, ValueError) as exc:
        raise RegistryAuthError(f"--with-registry-auth: cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise RegistryAuthError(f"--with-registry-auth: {path} is not a JSON object")
    auths: dict[str, Any] = config["auths"] if isinstance(config.get("auths"), dict) else {}
    entry = next((v for k, v in auths.items() if _key_registry(k) == registry and isinstance(v, dict)), None)
    if entry is None or not (entry.get("auth") or entry.get("password") or entry.get("identitytoken")):
        helpers: dict[str, Any] = config["credHelpers"] if isinstance(config.get("credHelpers"), dict) else {}
        helper = helpers.get(registry) or config.get("credsStore")
        if helper:
            raise RegistryAuthError(
                f"--with-registry-auth: the credentials for {registry} are kept by the credential helper "
                f"docker-credential-{helper}, which shoal does not read; put them in {path} under auths"
            )
        raise RegistryAuthError(
            f"--with-registry-auth: no credentials for {registry} in {path} "
            f"(log in with `docker login {registry}`, or set DOCKER_CONFIG)"
        )
    return _auth_config(entry, registry, path)


def _auth_config(entry: dict[str, Any], registry: str, path: Path) -> dict[str, str]:
    username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        import base64  # only with --with-registry-auth: not on every create's start-up
        import binascii

        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryAuthError(
                f"--with-registry-auth: the auth of {registry} in {path} is not base64 of user:password"
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryAuthError(
                f"--with-registry-auth: the auth of {registry} in {path} is not base64 of user:password"
            )
    found = {
        "username": username,
        "password": password,
        "serveraddress": registry,
        "identitytoken": str(entry.get("identitytoken") or ""),
    }
    return {key: value for key, value in found.items() if value}
