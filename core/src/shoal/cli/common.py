"""Calling the daemon from a command: one request, a one-line error on refusal; and which
daemon that is (``-H``, ``-c``, the TLS options, ``SHOAL_*`` variables, the current context)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from shoal.cli.errors import fail
from shoal.client import HOST_ENV, Client, ClientError, Endpoint, endpoint

if TYPE_CHECKING:  # the daemon's and the contexts' business: not loaded by a client command
    from pathlib import Path

INPUT_ERRORS = {"INVALID_ARGUMENT", "ALREADY_EXISTS", "NOT_FOUND"}
#: Commands that never talk to a daemon through the client: no need to choose one.
_LOCAL_COMMANDS = {"daemon", "context", "plugin"}


def remote_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The global ``-H``, ``-c`` and TLS options (docker's names)."""
    for option in reversed(
        (
            click.option(
                "-H",
                "--host",
                default=None,
                help="Daemon to connect to: unix:///path/to/shoal.sock (default "
                "unix:///run/shoal/shoal.sock) or tcp://HOST:PORT (with --tlsverify). Env: SHOAL_HOST.",
            ),
            click.option(
                "-c",
                "--context",
                "context_name",
                default=None,
                help="Name of the context to use (overrides SHOAL_HOST and 'shoal context use').",
            ),
            click.option(
                "--tlsverify",
                is_flag=True,
                help="Use mutual TLS and verify the daemon (env: SHOAL_TLS_VERIFY).",
            ),
            click.option("--tlscacert", default=None, help="Trust certs signed only by this CA (ca.pem)."),
            click.option("--tlscert", default=None, help="Path to TLS certificate file (cert.pem)."),
            click.option("--tlskey", default=None, help="Path to TLS key file (key.pem)."),
        )
    ):
        func = option(func)
    return func


def choose_daemon(ctx: click.Context) -> None:
    """Resolve the global options into the daemon's ``Endpoint`` (kept as the root's ``host``
    parameter, which every ``Client`` is built from); one line and exit 2 when they conflict or
    name something that does not exist."""
    if ctx.invoked_subcommand in _LOCAL_COMMANDS:
        return
    params = ctx.params
    local = _local_socket(params)
    if local is not None:
        params["host"] = local
        return
    from shoal.cli import contexts
    from shoal.cli.context_cmd import tls_files

    tls = tls_files(params["tlsverify"], params["tlscacert"], params["tlscert"], params["tlskey"])
    try:
        chosen, _ = contexts.choose(params.get("host"), params.get("context_name"), tls)
    except contexts.ContextError as exc:
        fail(str(exc), 2)
    params["host"] = chosen


def _local_socket(params: dict[str, Any]) -> Endpoint | None:
    """``-H unix://...`` (or ``SHOAL_HOST``) with no context and no TLS option: that socket,
    decided without loading the contexts (what a script or the bench runs; every command's
    start-up counts in its time, issue 18 item 4). None when anything else must be weighed."""
    if params.get("context_name") or params["tlsverify"] or params["tlscacert"]:
        return None
    if params["tlscert"] or params["tlskey"]:
        return None
    host = params.get("host") or os.environ.get(HOST_ENV) or ""
    if not (host.startswith("unix://") or host.startswith("/")):
        return None
    return endpoint(host)


def client(ctx: click.Context) -> Client:
    host: str | Endpoint | None = ctx.find_root().params.get("host")
    try:
        return Client(host)
    except ClientError as exc:
        fail(exc.message, 2)


def call(ctx: click.Context, method: str, **params: Any) -> Any:
    """Call the daemon; a refusal becomes ``Error: <message>`` and a non-zero exit."""
    try:
        return client(ctx).call(method, **params)
    except ClientError as exc:
        fail(exc.message, 2 if exc.code in INPUT_ERRORS else 1)


def control_listener(
    address: str | None,
    ca: str | None,
    cert: str | None,
    key: str | None,
    config_file: Path | None = None,
    swarm_root: Path | None = None,
) -> Any:
    """``shoal daemon --control-listen tcp://ADDR:PORT --tlscacert --tlscert --tlskey`` (or the
    ``[control]`` table of its ``--config`` file: ``listen``, ``tlscacert``, ``tlscert``,
    ``tlskey``; flags win) -> the daemon's ``RemoteListener``, None when not asked for; one line
    and exit 2 when a value is missing or a file does not load, or when ``--tlscacert`` is the
    CA of the swarm this node is in (``swarm_root``): every node's certificate would then
    control the swarm."""
    from pathlib import Path

    from shoal.controltls import TLSConfigError, TLSFiles, parse_tcp, server_context
    from shoal.daemon.localapi import RemoteListener

    table = _control_table(config_file) if config_file is not None else {}
    address = address or table.get("listen")
    ca, cert, key = ca or table.get("tlscacert"), cert or table.get("tlscert"), key or table.get("tlskey")
    if address is None:
        if ca or cert or key:
            fail("--tlscacert, --tlscert and --tlskey go with --control-listen tcp://ADDR:PORT", 2)
        return None
    if not (ca and cert and key):
        fail(
            "--control-listen needs --tlscacert (the CA of the clients' certificates), --tlscert and "
            "--tlskey: the control API is never served on TCP without mutual TLS",
            2,
        )
    if swarm_root is not None and _same_certificate(Path(ca), swarm_root):
        fail(
            f"--tlscacert {ca} is this swarm's CA: every node's certificate would control the swarm; "
            "use a CA of your own for the clients' certificates",
            2,
        )
    try:
        return RemoteListener(
            parse_tcp(address, "--control-listen"), server_context(TLSFiles(Path(ca), Path(cert), Path(key)))
        )
    except TLSConfigError as exc:
        fail(str(exc), 2)


def _same_certificate(ca_file: Path, swarm_root: Path) -> bool:
    """Whether ``ca_file`` holds the swarm's root certificate (False if either cannot be read:
    loading ``ca_file`` reports that)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        trusted = x509.load_pem_x509_certificates(ca_file.read_bytes())
        root = x509.load_pem_x509_certificate(swarm_root.read_bytes())
    except (OSError, ValueError):
        return False
    return root.public_bytes(Encoding.DER) in {c.public_bytes(Encoding.DER) for c in trusted}


def _control_table(config_file: Path) -> dict[str, str]:
    """The ``[control]`` table; relative file names are taken from the config file's directory."""
    import tomllib
    from pathlib import Path

    try:
        with config_file.open("rb") as handle:
            table = tomllib.load(handle).get("control", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        fail(f"cannot read the [control] table of {config_file}: {exc}", 2)
    keys = ("listen", "tlscacert", "tlscert", "tlskey")
    if not isinstance(table, dict) or not all(k in keys and isinstance(v, str) for k, v in table.items()):
        fail(f"config file {config_file}: [control] takes the strings {', '.join(keys)}", 2)
    return {
        k: (v if k == "listen" else str((config_file.parent / v) if not Path(v).is_absolute() else v))
        for k, v in table.items()
    }


def swarm_root_file(state_dir: Path) -> Path:
    """Where a node in a swarm keeps the swarm's root CA certificate."""
    from shoal.daemon.state import CERTS_DIR
    from shoal.identity import ROOT_FILE

    return state_dir.absolute() / CERTS_DIR / ROOT_FILE
