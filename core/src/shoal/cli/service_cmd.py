"""``shoal service``: create, update, rollback, ls, inspect, ps, scale, rm, logs.

Its own module, imported only when a ``service`` command runs or is listed (the CLI's start-up
counts in every command's time, issue 18 item 4). A detached ``service create`` on a Unix
socket usually does not get here at all: ``fastpath`` runs it without click, from the same
option tables (``service_flags``).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from shoal.cli.common import INPUT_ERRORS, call
from shoal.cli.errors import fail
from shoal.cli.inspect_opts import inspect_options
from shoal.cli.listfilter_opts import filter_help, filter_params, task_list_options
from shoal.cli.output import print_list
from shoal.cli.registry_auth import REGISTRY_AUTH_HELP, registry_credentials
from shoal.cli.service_flags import create_params
from shoal.cli.service_opts import (
    DockerFlagsCommand,
    common_options,
    create_options,
    env_from_files,
    params_of,
    update_options,
)
from shoal.cli.tasktable import list_tasks
from shoal.cli.tasktable import task_rows as task_rows  # where callers found it
from shoal.client import Client, ClientError
from shoal.ids import short_id


@click.group()
def service() -> None:
    """Manage swarm services."""


@service.command(
    "create",
    cls=DockerFlagsCommand,
    context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False},
)
@click.option("--name", default="", help="Service name (default: a generated adjective_surname).")
@click.option("--replicas", default=None, help="Number of tasks (default 1).")
@click.option(
    "--mode", default="replicated", help="Service mode: replicated, global, replicated-job or global-job."
)
@click.option("--max-concurrent", default=None, help="Job tasks to run at once (default: --replicas).")
@create_options
@common_options
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for convergence.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.option("--with-registry-auth", is_flag=True, help=REGISTRY_AUTH_HELP)
@click.argument("image")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def service_create(
    ctx: click.Context, /, image: str, args: tuple[str, ...], detach: bool, quiet: bool, **options: Any
) -> None:
    """Create a new service: IMAGE [COMMAND] [ARG...]."""
    params = create_params(image, args, options)
    if "env_file" in params:  # read here, as docker does: the files are on the client's machine
        given = {item.partition("=")[0] for item in params.get("env", [])}
        from_files = [e for e in env_from_files(params.pop("env_file")) if e.partition("=")[0] not in given]
        params["env"] = from_files + params.get("env", [])
    if params.pop("with_registry_auth", False):
        params["registry_auth"] = registry_credentials(image)
    result = call(ctx, "service.create", **params)
    service_id = result["ID"]
    click.echo(service_id)
    if not detach:
        from shoal.cli.progress import wait_converged  # not loaded by a --detach create

        wait_converged(ctx, service_id, quiet=quiet)


@service.command("update", cls=DockerFlagsCommand)
@click.argument("service_ref")
@click.option("--image", default=None, help="Service image tag.")
@click.option(
    "--args", "args_text", default=None, help="Service command args (one string, split as a shell does)."
)
@click.option("--replicas", default=None, help="Number of tasks.")
@click.option("--max-concurrent", default=None, help="Job tasks to run at once.")
@update_options
@common_options
@click.option("--force", is_flag=True, help="Force update even if no changes require it.")
@click.option("--rollback", is_flag=True, help="Rollback to previous specification.")
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for convergence.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.option("--with-registry-auth", is_flag=True, help=REGISTRY_AUTH_HELP)
@click.pass_context
def service_update(
    ctx: click.Context, /, service_ref: str, args_text: str | None, detach: bool, quiet: bool, **options: Any
) -> None:
    """Update a service (a rolling update of the tasks whose spec changed)."""
    params = params_of(options)
    params.pop("no_resolve_image", None)
    if args_text is not None:
        from shoal.specs import SpecError, command_words

        try:
            params["args"] = command_words(args_text, "--args")
        except SpecError as exc:
            fail(str(exc), 2)
    if params.pop("with_registry_auth", False):
        params["registry_auth"] = registry_credentials(
            params.get("image") or _service_image(ctx, service_ref)
        )
    result = call(ctx, "service.update", service=service_ref, **params)
    click.echo(service_ref)
    if not detach:
        from shoal.cli.progress import wait_update

        wait_update(ctx, result["ID"], quiet=quiet, rollback=bool(params.get("rollback")))


def _service_image(ctx: click.Context, service_ref: str) -> str:
    found = call(ctx, "service.inspect", services=[service_ref])
    return str(found[0].get("spec", {}).get("task", {}).get("container", {}).get("image", ""))


@service.command("rollback")
@click.argument("service_ref")
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for convergence.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.pass_context
def service_rollback(ctx: click.Context, service_ref: str, detach: bool, quiet: bool) -> None:
    """Revert changes to a service's configuration."""
    result = call(ctx, "service.rollback", service=service_ref)
    click.echo(service_ref)
    if not detach:
        from shoal.cli.progress import wait_update

        wait_update(ctx, result["ID"], quiet=quiet, rollback=True)


@service.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@click.option("--format", "fmt", default=None, help="table, json, or a template.")
@click.option("-f", "--filter", "filters", multiple=True, help=filter_help("id, label, mode, name"))
@click.pass_context
def service_ls(ctx: click.Context, quiet: bool, fmt: str | None, filters: tuple[str, ...]) -> None:
    """List services."""
    print_services(call(ctx, "service.ls", **filter_params(filters)), quiet=quiet, fmt=fmt)


def print_services(services: list[dict[str, Any]], *, quiet: bool, fmt: str | None) -> None:
    """``service ls`` rows (``stack services`` prints the same)."""
    print_list(
        services,
        fmt=fmt,
        quiet=quiet,
        headers=("ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"),
        row=lambda s: (short_id(s["ID"]), s["Name"], s["Mode"], s["Replicas"], s["Image"], s["Ports"]),
        json_keys=("ID", "Name", "Mode", "Replicas", "Image", "Ports"),
        id_of=lambda s: short_id(s["ID"]),  # docker's -q prints 12 characters (no --no-trunc here)
    )


@service.command("inspect")
@inspect_options("service", pretty=True)
@click.argument("services", nargs=-1, required=True)
@click.pass_context
def service_inspect(ctx: click.Context, services: tuple[str, ...], fmt: str | None, pretty: bool) -> None:
    """Display detailed information on one or more services, in Docker's shape."""
    from shoal.cli.inspect_cmd import inspect_refs

    inspect_refs(ctx, ["service"], services, fmt, pretty)


@service.command("ps")
@click.argument("services", nargs=-1, required=True)
@task_list_options
@click.pass_context
def service_ps(
    ctx: click.Context,
    services: tuple[str, ...],
    quiet: bool,
    no_trunc: bool,
    fmt: str | None,
    filters: tuple[str, ...],
) -> None:
    """List the tasks of one or more services."""
    params = {"services": list(services), **filter_params(filters)}
    list_tasks(ctx, params, quiet=quiet, no_trunc=no_trunc, fmt=fmt)  # rows read as they come


@service.command("scale")
@click.argument("pairs", nargs=-1, required=True)
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for convergence.")
@click.pass_context
def service_scale(ctx: click.Context, pairs: tuple[str, ...], detach: bool) -> None:
    """Scale one or more replicated services: SERVICE=REPLICAS..."""
    parsed = []
    for pair in pairs:
        name, sep, count = pair.partition("=")
        if not sep or not name:
            fail(f'invalid scale specifier "{pair}": use SERVICE=REPLICAS', 2)
        parsed.append((name, count))
    for name, count in parsed:
        result = call(ctx, "service.scale", service=name, replicas=count)
        click.echo(f"{name} scaled to {result['Replicas']}")
    if not detach:
        from shoal.cli.progress import wait_converged

        for name, _ in parsed:
            wait_converged(ctx, name, quiet=False, verify=False)


@service.command("rm")
@click.argument("services", nargs=-1, required=True)
@click.pass_context
def service_rm(ctx: click.Context, services: tuple[str, ...]) -> None:
    """Remove one or more services."""
    for name in call(ctx, "service.rm", services=list(services)):
        click.echo(name)


@service.command("logs")
@click.argument("service_ref")
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "--tail", default="all", help="Number of lines from the end (default all).")
@click.option(
    "--since",
    default="",
    help='Show logs since a time (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes).',
)
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--details", is_flag=True, help="Show extra details provided to logs.")
@click.option("--no-task-ids", is_flag=True, help="Do not include task IDs in output.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names in output.")
@click.option("--raw", is_flag=True, help="Do not prefix lines.")
@click.pass_context
def service_logs(
    ctx: click.Context,
    service_ref: str,
    follow: bool,
    tail: str,
    since: str,
    timestamps: bool,
    details: bool,
    no_task_ids: bool,
    no_trunc: bool,
    no_resolve: bool,
    raw: bool,
) -> None:
    """Fetch the logs of a service's tasks."""
    import time

    from shoal.cli.logformat import LogFormat, format_line
    from shoal.logtime import SinceError, parse_since

    if tail != "all" and not tail.isdigit():
        fail(f'invalid --tail "{tail}": use a number of lines or all', 2)
    since_seconds = 0.0
    if since:
        try:
            since_seconds = parse_since(since, time.time())  # relative to this machine's clock
        except SinceError as exc:
            fail(str(exc), 2)
    fmt = LogFormat(
        raw=raw,
        no_task_ids=no_task_ids,
        no_trunc=no_trunc,
        no_resolve=no_resolve,
        timestamps=timestamps,
        details=details,
    )
    incomplete = False
    try:
        for item in Client(ctx.find_root().params.get("host"), timeout=None).stream(
            "service.logs", service=service_ref, follow=follow, tail=tail, since=since_seconds
        ):
            if "Warning" in item:  # a node whose tasks' logs cannot be had: said, and exit 1
                click.echo(f"warning: {item['Warning']}", err=True)
                incomplete = True
                continue
            click.echo(format_line(item, fmt), err=item.get("Stream") == "stderr")
    except ClientError as exc:
        fail(exc.message, 2 if exc.code in INPUT_ERRORS else 1)
    if incomplete:
        sys.exit(1)  # as docker: "incomplete log stream" is an error once the rest is printed
