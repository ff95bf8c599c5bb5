"""Contexts: named daemons the CLI can talk to (``shoal context create/ls/use/rm/inspect``),
and the choice of daemon for one command line, with docker's precedence.

Stored under ``~/.shoal`` (``SHOAL_CONFIG``): ``config.json`` names the current context;
``contexts/NAME/meta.json`` holds a context's host and description, and
``contexts/NAME/tls/`` copies of its ``ca.pem``, ``cert.pem`` and ``key.pem`` (directories 0700,
files 0600: the key grants control of a swarm). The context ``default`` is built in: the local
socket (or ``SHOAL_HOST``).

Which daemon a command talks to, first match wins (as docker): ``-H``; ``-c/--context``;
``SHOAL_HOST``; ``SHOAL_CONTEXT``; the current context; the local socket.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.client import DEFAULT_SOCKET, HOST_ENV, ClientError, Endpoint, config_dir, endpoint
from shoal.controltls import CA_FILE, CERT_FILE, KEY_FILE, TLSConfigError, TLSFiles, client_context

CONTEXT_ENV = "SHOAL_CONTEXT"
DEFAULT_CONTEXT = "default"
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.+-]*\Z")


class ContextError(Exception):
    """A context that cannot be created, found or used: one line for the user."""


@dataclass(frozen=True)
class Context:
    name: str
    description: str
    host: str
    tls_dir: Path | None  # None: no TLS files (a unix socket)

    def endpoint(self) -> Endpoint:
        files = TLSFiles.in_directory(self.tls_dir) if self.tls_dir is not None else None
        try:
            return endpoint(self.host, files)
        except ClientError as exc:
            raise ContextError(f'context "{self.name}": {exc.message}') from None

    def as_docker(self) -> dict[str, Any]:
        """``context inspect``: docker's shape, with shoal as the endpoint's name."""
        return {
            "Name": self.name,
            "Metadata": {"Description": self.description} if self.description else {},
            "Endpoints": {"shoal": {"Host": self.host, "SkipTLSVerify": False}},
            "TLSMaterial": {"shoal": [CA_FILE, CERT_FILE, KEY_FILE]} if self.tls_dir else {},
            "Storage": {
                "MetadataPath": str(_dir(self.name)) if self.name != DEFAULT_CONTEXT else "<IN MEMORY>",
                "TLSPath": str(self.tls_dir) if self.tls_dir else "<IN MEMORY>",
            },
        }


def _root() -> Path:
    return config_dir() / "contexts"


def _dir(name: str) -> Path:
    return _root() / name


def check_name(name: str) -> None:
    if name == DEFAULT_CONTEXT:
        raise ContextError('"default" is a reserved context name (the local socket)')
    if not _NAME.match(name):
        raise ContextError(
            f'invalid context name "{name}": use letters, digits and _.+- (not first), e.g. prod-eu'
        )


def default_context() -> Context:
    host = os.environ.get(HOST_ENV) or f"unix://{DEFAULT_SOCKET}"
    return Context(DEFAULT_CONTEXT, "Current SHOAL_HOST based configuration", host, None)


def load(name: str) -> Context:
    if name == DEFAULT_CONTEXT:
        return default_context()
    meta_file = _dir(name) / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise ContextError(f'context "{name}" does not exist (see shoal context ls)') from None
    except (OSError, ValueError) as exc:
        raise ContextError(f"cannot read context {name} ({meta_file}): {exc}") from None
    tls_dir = _dir(name) / "tls"
    return Context(
        name, str(meta.get("Description", "")), str(meta["Host"]), tls_dir if tls_dir.is_dir() else None
    )


def all_contexts() -> list[Context]:
    names = (
        sorted(p.name for p in _root().iterdir() if (p / "meta.json").is_file()) if _root().is_dir() else []
    )
    return [default_context(), *(load(n) for n in names)]


def current_name() -> str:
    try:
        config = json.loads((config_dir() / "config.json").read_text())
    except (OSError, ValueError):
        return DEFAULT_CONTEXT
    return str(config.get("currentContext") or DEFAULT_CONTEXT)


def use(name: str) -> None:
    """Make ``name`` the current context (``default``: none)."""
    load(name)  # it must exist
    config_file = config_dir() / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        config = {}
    if name == DEFAULT_CONTEXT:
        config.pop("currentContext", None)
    else:
        config["currentContext"] = name
    _private_dir(config_dir())
    config_file.write_text(json.dumps(config, indent=1) + "\n")


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def create(name: str, description: str, host: str, tls: TLSFiles | None) -> Context:
    """A new context; for ``tcp://`` the TLS files are checked (they must load) and copied."""
    check_name(name)
    if (_dir(name) / "meta.json").exists():
        raise ContextError(f'context "{name}" already exists')
    if host.startswith("tcp://"):
        if tls is None:
            raise ContextError(f"{host} needs mutual TLS: give --tlscacert, --tlscert and --tlskey")
        try:
            client_context(tls)
        except TLSConfigError as exc:
            raise ContextError(str(exc)) from None
    try:
        endpoint(host, tls)
    except ClientError as exc:
        raise ContextError(exc.message) from None
    directory = _dir(name)
    _private_dir(config_dir())
    _private_dir(_root())
    _private_dir(directory)
    try:
        if tls is not None and host.startswith("tcp://"):
            _private_dir(directory / "tls")
            for source, target in ((tls.ca, CA_FILE), (tls.cert, CERT_FILE), (tls.key, KEY_FILE)):
                destination = directory / "tls" / target
                fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(source.read_bytes())
        meta = {"Name": name, "Description": description, "Host": host}
        (directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    except OSError as exc:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
        raise ContextError(f"cannot store context {name} in {directory}: {exc.strerror or exc}") from None
    return load(name)


def remove(name: str, force: bool) -> None:
    if name == DEFAULT_CONTEXT:
        raise ContextError('the "default" context cannot be removed')
    load(name)
    if current_name() == name:
        if not force:
            raise ContextError(f'context "{name}" is in use, set -f flag to force remove')
        use(DEFAULT_CONTEXT)
    import shutil

    shutil.rmtree(_dir(name))


def choose(host: str | None, context: str | None, tls: TLSFiles | None) -> tuple[Endpoint, str]:
    """The daemon for this command line and the context it came from (docker's precedence)."""
    if host and context:
        raise ContextError("conflicting options: either specify --host or --context, not both")
    try:
        if host:
            return endpoint(host, tls), ""
        if context:
            return load(context).endpoint(), context
        if os.environ.get(HOST_ENV):
            return endpoint(os.environ[HOST_ENV], tls), ""
        name = os.environ.get(CONTEXT_ENV) or current_name()
        return load(name).endpoint(), name
    except ClientError as exc:
        raise ContextError(exc.message) from None
