"""``shoal node``: ls, inspect, update, promote, demote, rm, ps.

Its own module, imported only when a ``node`` command runs or is listed (the CLI's start-up
counts in every command's time, issue 18 item 4).
"""

from __future__ import annotations

import click

from shoal.cli.common import call
from shoal.cli.errors import fail
from shoal.cli.inspect_opts import inspect_options
from shoal.cli.listfilter_opts import TASK_FILTERS, filter_help, filter_params
from shoal.cli.output import print_list
from shoal.cli.tasktable import list_tasks


@click.group()
def node() -> None:
    """Manage swarm nodes."""


NODE_JSON_KEYS = ("ID", "Hostname", "Status", "Availability", "ManagerStatus", "EngineVersion", "Self")


@node.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@click.option("--format", "fmt", default=None, help="table, json, or a template such as '{{.Hostname}}'.")
@click.option(
    "-f",
    "--filter",
    "filters",
    multiple=True,
    help=filter_help("id, label, membership, name, node.label, role"),
)
@click.pass_context
def node_ls(ctx: click.Context, quiet: bool, fmt: str | None, filters: tuple[str, ...]) -> None:
    """List nodes in the swarm."""
    nodes = call(ctx, "node.ls", **filter_params(filters))
    print_list(
        nodes,
        fmt=fmt,
        quiet=quiet,
        headers=("ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"),
        row=lambda n: (
            n["ID"] + (" *" if n["Self"] else ""),
            n["Hostname"],
            n["Status"],
            n["Availability"],
            n["ManagerStatus"],
            n["EngineVersion"],
        ),
        json_keys=NODE_JSON_KEYS,
        id_of=lambda n: str(n["ID"]),
    )


@node.command("inspect")
@inspect_options("node", pretty=True)
@click.argument("nodes", nargs=-1)
@click.pass_context
def node_inspect(ctx: click.Context, nodes: tuple[str, ...], fmt: str | None, pretty: bool) -> None:
    """Display detailed information on one or more nodes (default: self), in Docker's shape."""
    from shoal.cli.inspect_cmd import inspect_refs

    inspect_refs(ctx, ["node"], nodes or ("self",), fmt, pretty)


@node.command("update")
@click.argument("node_ref")
@click.option("--availability", default=None, help="Availability of the node: active, pause or drain.")
@click.option("--label-add", "label_add", multiple=True, help="Add or update a node label (KEY=VALUE).")
@click.option("--label-rm", "label_rm", multiple=True, help="Remove a node label if exists.")
@click.option("--role", default=None, help="Role of the node: worker or manager.")
@click.pass_context
def node_update(
    ctx: click.Context,
    node_ref: str,
    availability: str | None,
    label_add: tuple[str, ...],
    label_rm: tuple[str, ...],
    role: str | None,
) -> None:
    """Update a node."""
    if role not in (None, "worker", "manager"):
        fail(f'invalid --role "{role}": use worker or manager', 2)
    if role is not None:
        call(ctx, "node.promote" if role == "manager" else "node.demote", nodes=[node_ref])
        if availability is None and not label_add and not label_rm:
            click.echo(node_ref)
            return
    result = call(
        ctx,
        "node.update",
        node=node_ref,
        availability=availability,
        label_add=list(label_add),
        label_rm=list(label_rm),
    )
    click.echo(result["ID"])


@node.command("promote")
@click.argument("nodes", nargs=-1, required=True)
@click.pass_context
def node_promote(ctx: click.Context, nodes: tuple[str, ...]) -> None:
    """Promote one or more nodes to manager in the swarm."""
    for line in call(ctx, "node.promote", nodes=list(nodes)):
        click.echo(line)


@node.command("demote")
@click.argument("nodes", nargs=-1, required=True)
@click.pass_context
def node_demote(ctx: click.Context, nodes: tuple[str, ...]) -> None:
    """Demote one or more nodes from manager in the swarm."""
    for line in call(ctx, "node.demote", nodes=list(nodes)):
        click.echo(line)


@node.command("rm")
@click.argument("nodes", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Force remove a node from the swarm.")
@click.pass_context
def node_rm(ctx: click.Context, nodes: tuple[str, ...], force: bool) -> None:
    """Remove one or more nodes from the swarm."""
    for node_id in call(ctx, "node.rm", nodes=list(nodes), force=force):
        click.echo(node_id)


@node.command("ps")
@click.argument("node_ref", required=False, default="self")
@click.option("-q", "--quiet", is_flag=True)
@click.option("--no-trunc", is_flag=True)
@click.option("--format", "fmt", default=None)
@click.option("-f", "--filter", "filters", multiple=True, help=filter_help(TASK_FILTERS))
@click.pass_context
def node_ps(
    ctx: click.Context, node_ref: str, quiet: bool, no_trunc: bool, fmt: str | None, filters: tuple[str, ...]
) -> None:
    """List tasks running on a node (default: self)."""
    params = {"node": node_ref, **filter_params(filters)}
    list_tasks(ctx, params, quiet=quiet, no_trunc=no_trunc, fmt=fmt)  # rows read as they come
