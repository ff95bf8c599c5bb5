"""``shoal network``: create, ls, inspect, rm (docker's commands for swarm-scoped networks).

Every value is checked by the manager (subnet syntax and overlap, names in use), so any
client gets the same one-line errors; ``ls`` filters here, like ``secret ls``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from shoal.cli.common import call
from shoal.cli.errors import fail
from shoal.cli.output import print_list
from shoal.cli.secret_cmd import _matches as matches  # docker's list filter rules, one copy
from shoal.ids import short_id

FILTER_KEYS = ("id", "name", "driver", "label")
JSON_KEYS = ("ID", "Name", "Driver", "Scope", "Labels")


def _filters(values: tuple[str, ...]) -> list[tuple[str, str]]:
    parsed = []
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or key not in FILTER_KEYS:
            fail(f'invalid --filter "{text}": use {", ".join(k + "=..." for k in FILTER_KEYS)}', 2)
        parsed.append((key, value))
    return parsed


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
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output (id=, name=, driver=, label=).")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@click.pass_context
def network_ls(
    ctx: click.Context, quiet: bool, fmt: str | None, filters: tuple[str, ...], no_trunc: bool
) -> None:
    """List networks."""
    wanted = _filters(filters)
    rows = [r for r in call(ctx, "network.ls") if matches(r, wanted)]
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
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def network_inspect(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks."""
    click.echo(json.dumps(call(ctx, "network.inspect", networks=list(refs)), indent=4))


@network.command("rm")
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def network_rm(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Remove one or more networks (refused while a service uses one)."""
    for name in call(ctx, "network.rm", networks=list(refs)):
        click.echo(name)
