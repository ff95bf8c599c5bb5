"""``shoal context``: create, ls, use, rm and inspect the daemons this CLI knows (docker's
``context`` commands; the store is ``shoal.cli.contexts``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from shoal.cli import contexts
from shoal.cli.errors import fail
from shoal.cli.output import print_list
from shoal.client import CERT_PATH_ENV, config_dir
from shoal.controltls import TLSFiles


def tls_files(tlsverify: bool, ca: str | None, cert: str | None, key: str | None) -> TLSFiles | None:
    """The TLS files named by ``--tlsverify``/``--tlscacert``/``--tlscert``/``--tlskey`` (any one
    of them asks for TLS; the others default to ``SHOAL_CERT_PATH`` or ``~/.shoal``), or None."""
    if not (tlsverify or ca or cert or key):
        return None
    defaults = TLSFiles.in_directory(Path(os.environ.get(CERT_PATH_ENV) or config_dir()))
    return TLSFiles(
        Path(ca) if ca else defaults.ca,
        Path(cert) if cert else defaults.cert,
        Path(key) if key else defaults.key,
    )


def _docker_endpoint(value: str) -> dict[str, str]:
    """docker's ``--docker "host=tcp://...,ca=FILE,cert=FILE,key=FILE"``."""
    fields: dict[str, str] = {}
    for part in value.split(","):
        key, sep, field_value = part.partition("=")
        if not sep or key not in ("host", "ca", "cert", "key", "description"):
            fail(f'invalid --shoal "{value}": use host=tcp://HOST:PORT,ca=FILE,cert=FILE,key=FILE', 2)
        fields[key] = field_value
    return fields


@click.group()
def context() -> None:
    """Manage contexts: named swarms (daemon addresses and their client certificates)."""


@context.command("create")
@click.argument("name")
@click.option("--description", default="", help="Description of the context.")
@click.option("--host", default=None, help="The daemon: tcp://HOST:PORT or unix:///path/to/shoal.sock.")
@click.option("--tlscacert", default=None, help="Trust certs signed only by this CA.")
@click.option("--tlscert", default=None, help="Path to the client's TLS certificate file.")
@click.option("--tlskey", default=None, help="Path to the client's TLS key file.")
@click.option(
    "--shoal",
    "endpoint_text",
    default=None,
    help='docker\'s form: "host=tcp://HOST:PORT,ca=FILE,cert=FILE,key=FILE".',
)
def context_create(
    name: str,
    description: str,
    host: str | None,
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
    endpoint_text: str | None,
) -> None:
    """Create a context (its certificate files are copied into ~/.shoal/contexts/NAME/tls)."""
    if endpoint_text:
        fields = _docker_endpoint(endpoint_text)
        host = host or fields.get("host")
        tlscacert, tlscert, tlskey = (
            tlscacert or fields.get("ca"),
            tlscert or fields.get("cert"),
            tlskey or fields.get("key"),
        )
    if not host:
        fail("give the daemon's address: --host tcp://HOST:PORT (or unix:///path)", 2)
    try:
        contexts.create(name, description, host, tls_files(False, tlscacert, tlscert, tlskey))
    except contexts.ContextError as exc:
        fail(str(exc), 2)
    click.echo(name)
    click.echo(f'Successfully created context "{name}"', err=True)


@context.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only show context names.")
@click.option("--format", "fmt", default=None, help="table, json, or a template such as '{{.Name}}'.")
def context_ls(quiet: bool, fmt: str | None) -> None:
    """List contexts (the current one marked with *)."""
    current = os.environ.get(contexts.CONTEXT_ENV) or contexts.current_name()
    rows = [
        {
            "Name": c.name,
            "Current": c.name == current,
            "Description": c.description,
            "ShoalEndpoint": c.host,
        }
        for c in _all()
    ]
    print_list(
        rows,
        fmt=fmt,
        quiet=quiet,
        headers=("NAME", "DESCRIPTION", "SHOAL ENDPOINT"),
        row=lambda r: (r["Name"] + (" *" if r["Current"] else ""), r["Description"], r["ShoalEndpoint"]),
        json_keys=("Name", "Current", "Description", "ShoalEndpoint"),
        id_of=lambda r: str(r["Name"]),
    )


def _all() -> list[contexts.Context]:
    try:
        return contexts.all_contexts()
    except contexts.ContextError as exc:
        fail(str(exc), 1)


@context.command("use")
@click.argument("name")
def context_use(name: str) -> None:
    """Set the current context (``default``: the local socket)."""
    try:
        contexts.use(name)
    except contexts.ContextError as exc:
        fail(str(exc), 2)
    click.echo(name)
    click.echo(f'Current context is now "{name}"', err=True)
    if os.environ.get(contexts.CONTEXT_ENV) or os.environ.get("SHOAL_HOST"):
        click.echo(
            "Warning: SHOAL_HOST or SHOAL_CONTEXT is set and overrides the context set by "
            '"shoal context use"',
            err=True,
        )


@context.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Force the removal of a context in use.")
def context_rm(names: tuple[str, ...], force: bool) -> None:
    """Remove one or more contexts (and their copied certificates)."""
    for name in names:
        try:
            contexts.remove(name, force)
        except contexts.ContextError as exc:
            fail(str(exc), 2)
        click.echo(name)


@context.command("inspect")
@click.argument("names", nargs=-1)
def context_inspect(names: tuple[str, ...]) -> None:
    """Display detailed information on one or more contexts (default: the current one)."""
    try:
        found = [contexts.load(n).as_docker() for n in (names or (contexts.current_name(),))]
    except contexts.ContextError as exc:
        fail(str(exc), 1)
    click.echo(json.dumps(found, indent=4))
