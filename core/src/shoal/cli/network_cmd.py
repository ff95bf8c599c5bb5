"""``shoal network``: create, ls, inspect, rm (docker's commands for swarm-scoped networks).

Every value is checked by the manager (subnet syntax and overlap, names in use, ``ls``'s
filters), so any client gets the same one-line errors. ``rm`` and ``inspect`` take each name
on its own, as docker's do: ``rm`` removes every network it can and prints one error line per
name it could not, ``inspect`` prints the networks found and one error line per missing one;
either exits 1 when any name failed.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from shoal.cli.common import call, client
from shoal.cli.errors import fail, one_line
from shoal.cli.inspect_opts import inspect_options
from shoal.cli.listfilter_opts import filter_help, filter_params
from shoal.cli.output import print_list
from shoal.client import ClientError
from shoal.ids import short_id

JSON_KEYS = ("ID", "Name", "Driver", "Scope", "Labels")
#: The keys of ``network ls --filter`` (the manager checks them: ``listfilters.NETWORK_KEYS``).
NETWORK_FILTERS = "dangling, driver, id, label, name, scope, type"
#: Refusals that concern one name: ``rm`` reports them and goes on with the next name; any
#: other (no daemon, no leader) ends the command at once, as it would fail every name alike.
PER_NAME = {"NOT_FOUND", "FAILED_PRECONDITION", "INVALID_ARGUMENT"}


@click.group()
def network() -> None:
    """Manage swarm networks (overlay networks across the swarm's nodes)."""


@network.command("create")
@click.argument("name")
@click.option("-d", "--driver", default="overlay", help="Driver (overlay).")
@click.option("--subnet", default=None, help="Subnet in CIDR form (default: from the swarm's address pool).")
@click.option("--gateway", default=None, help="Gateway of the subnet (default: its first address).")
@click.option("--attachable", is_flag=True, help="Let standalone containers attach.")
@click.option("--ingress", is_flag=True, help="Create the routing mesh's network (one per swarm).")
@click.option("--label", "labels", multiple=True, help="Network labels (KEY=VALUE).")
@click.option("-o", "--opt", "options", multiple=True, help="Driver options (KEY=VALUE).")
@click.pass_context
def network_create(
    ctx: click.Context,
    name: str,
    driver: str,
    subnet: str | None,
    gateway: str | None,
    attachable: bool,
    ingress: bool,
    labels: tuple[str, ...],
    options: tuple[str, ...],
) -> None:
    """Create a network."""
    params: dict[str, Any] = {
        "name": name,
        "driver": driver,
        "attachable": attachable,
        "ingress": ingress,
        "labels": list(labels),
        "options": list(options),
    }
    if subnet is not None:
        params["subnet"] = subnet
    if gateway is not None:
        params["gateway"] = gateway
    click.echo(call(ctx, "network.create", **params)["ID"])


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@click.option("--format", "fmt", default=None, help="table, json or a template such as '{{.Name}}'.")
@click.option("-f", "--filter", "filters", multiple=True, help=filter_help(NETWORK_FILTERS))
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@click.pass_context
def network_ls(
    ctx: click.Context, quiet: bool, fmt: str | None, filters: tuple[str, ...], no_trunc: bool
) -> None:
    """List networks."""
    rows = call(ctx, "network.ls", **filter_params(filters))
    print_list(
        rows,
        fmt=fmt,
        quiet=quiet,
        headers=("NETWORK ID", "NAME", "DRIVER", "SCOPE"),
        row=lambda r: (
            str(r["ID"]) if no_trunc else short_id(str(r["ID"])),
            r["Name"],
            r["Driver"],
            r["Scope"],
        ),
        json_keys=JSON_KEYS,
        id_of=lambda r: str(r["ID"]) if no_trunc else short_id(str(r["ID"])),
    )


@network.command("inspect")
@inspect_options("network", pretty=False)
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def network_inspect(ctx: click.Context, refs: tuple[str, ...], fmt: str | None) -> None:
    """Display detailed information on one or more networks."""
    from shoal.cli.inspect_cmd import inspect_refs  # protobuf and templates only when inspecting

    inspect_refs(ctx, ["network"], refs, fmt)


@network.command("rm")
@click.option("-f", "--force", is_flag=True, help="Do not error if the network does not exist.")
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def network_rm(ctx: click.Context, refs: tuple[str, ...], force: bool) -> None:
    """Remove one or more networks (refused while a service uses one)."""
    daemon = client(ctx)
    failed = False
    for ref in refs:
        try:
            daemon.call("network.rm", networks=[ref])
        except ClientError as exc:
            if exc.code not in PER_NAME:
                fail(exc.message, 1)
            if not (force and exc.code == "NOT_FOUND"):
                click.echo(f"Error: {one_line(exc.message)}", err=True)
                failed = True
            continue
        click.echo(ref)
    if failed:
        sys.exit(1)  # each error is printed above (ctx.exit's code is lost: not standalone)
