"""``shoal stack``: deploy, ls, ps, services, rm (docker's commands for Compose files).

``deploy`` reads and checks every file and every service's options before it changes
anything (``shoal.stack``), then creates the networks, secrets and configs the services use,
creates new services and replaces the spec of existing ones: the managers keep a service
whose spec did not change untouched (no new version), and roll the others as any update.
Everything a stack makes carries the ``com.docker.stack.namespace`` label, which is how
``ls``, ``ps``, ``services`` and ``rm`` find it again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from shoal.cli.common import call
from shoal.cli.errors import fail
from shoal.cli.listfilter_opts import filter_help, task_list_options
from shoal.cli.output import print_list
from shoal.cli.progress import wait_converged, wait_update
from shoal.cli.registry_auth import REGISTRY_AUTH_HELP, registry_credentials
from shoal.cli.service_opts import DockerFlagsCommand
from shoal.ports import parse_publish, protocol_name
from shoal.proto import objects_pb2 as pb
from shoal.specs import SpecError, service_spec, validate_name
from shoal.stack.compose import ComposeError, load
from shoal.stack.convert import NAMESPACE_LABEL, StackObject, StackPlan, compose_key_of, plan

_LIST_METHODS = {"network": "network.ls", "secret": "secret.ls", "config": "config.ls"}


def _check_name(namespace: str) -> str:
    try:
        return validate_name(namespace)
    except SpecError:
        fail(f'invalid stack name "{namespace}": use letters, digits, "-", "_" and "."', 2)


def build_plan(files: list[Path], namespace: str, env: dict[str, str]) -> StackPlan:
    """The files read, checked and converted, and every service's spec built once here (the
    same code the managers run), so a bad value is refused before anything is created."""
    stack = plan(load(files, env), namespace, env)
    for service in stack.services:
        try:
            service_spec(service.params)
        except SpecError as exc:
            key = compose_key_of(str(exc))
            where = f"services.{service.key}" + (f".{key}" if key else "")
            raise ComposeError(f"{service.file}: {where}: {exc}") from None
    return stack


def _stack_services(
    ctx: click.Context, namespace: str, filters: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    wanted = [f"label={NAMESPACE_LABEL}={namespace}", *filters]
    return list(call(ctx, "service.ls", filters=wanted))


def _existing(ctx: click.Context) -> dict[str, dict[str, dict[str, Any]]]:
    """The swarm's networks, secrets and configs by name."""
    return {kind: {o["Name"]: o for o in call(ctx, method)} for kind, method in _LIST_METHODS.items()}


def _check_external(stack: StackPlan, existing: dict[str, dict[str, dict[str, Any]]]) -> None:
    for obj in stack.objects:
        if obj.external and obj.name not in existing[obj.kind]:
            fail(
                f'{obj.kind} "{obj.name}" is declared as external, but could not be found: create it first', 2
            )
        if not obj.external and obj.name in existing[obj.kind]:
            labels = existing[obj.kind][obj.name].get("Labels") or {}
            if labels.get(NAMESPACE_LABEL) != stack.namespace:
                fail(
                    f'{obj.kind} "{obj.name}" already exists and is not part of stack "{stack.namespace}": '
                    "remove it, or declare it external: true",
                    2,
                )


_PORTS_TEXT = re.compile(r"\*:(\d+)->\d+/(\w+)")


def port_conflicts(stack: StackPlan, services: list[dict[str, Any]]) -> str:
    """The first routing-mesh port the stack would publish that another service (of the swarm,
    or of this stack) already has, as the error line; "" when there is none. Checked before
    anything is made, so a clash does not leave half a stack behind."""
    owners: dict[tuple[int, str], str] = {}
    for row in services:
        for port, protocol in _PORTS_TEXT.findall(str(row.get("Ports") or "")):
            owners[(int(port), protocol)] = str(row["Name"])
    mine = {s.name for s in stack.services}
    owners = {k: v for k, v in owners.items() if v not in mine}
    for service in stack.services:
        for text in service.params.get("publish", []):
            port = parse_publish(text, "ports")
            if port.publish_mode != pb.PortConfig.INGRESS or not port.published_port:
                continue
            key = (port.published_port, protocol_name(port))
            if key in owners and owners[key] != service.name:
                return (
                    f"{service.file}: services.{service.key}.ports: port {key[0]}/{key[1]} is already "
                    f"published by service {owners[key]}"
                )
            owners[key] = service.name
    return ""


def _create(ctx: click.Context, obj: StackObject, say: Callable[[str], None]) -> None:
    say(f"Creating {obj.kind} {obj.name}")
    labels = [f"{k}={v}" for k, v in obj.labels.items()]
    if obj.kind == "network":
        call(ctx, "network.create", name=obj.name, labels=labels, **obj.options)
    else:
        call(ctx, f"{obj.kind}.create", name=obj.name, data=obj.data, labels=labels)


@click.group()
def stack() -> None:
    """Manage swarm stacks (services, networks, secrets and configs from Compose files)."""


@stack.command("deploy", cls=DockerFlagsCommand)
@click.option(
    "-c",
    "--compose-file",
    "files",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Path to a Compose file (repeatable: later files override earlier ones).",
)
@click.option("--prune", is_flag=True, help="Remove services of the stack that the files no longer name.")
@click.option("--with-registry-auth", is_flag=True, help=REGISTRY_AUTH_HELP)
@click.option(
    "--resolve-image",
    type=click.Choice(["always", "changed", "never"]),
    default="always",
    help="Accepted for docker compatibility: shoal never resolves images remotely.",
)
@click.option(
    "-d",
    "--detach/--no-detach",
    default=True,
    help="Exit at once (default); --detach=false follows each created or updated service to convergence.",
)
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.argument("namespace", metavar="STACK")
@click.pass_context
def stack_deploy(
    ctx: click.Context,
    files: tuple[Path, ...],
    prune: bool,
    with_registry_auth: bool,
    resolve_image: str,
    detach: bool,
    quiet: bool,
    namespace: str,
) -> None:
    """Deploy a new stack or update an existing one."""
    _check_name(namespace)
    try:
        stack_plan = build_plan(list(files), namespace, dict(os.environ))
    except ComposeError as exc:
        fail(str(exc), 2)
    say: Callable[[str], None] = (lambda text: None) if quiet else click.echo
    for key, keys in sorted(stack_plan.ignored.items()):
        if keys:
            click.echo(f"Ignoring unsupported options for service {key}: {', '.join(keys)}", err=True)
    existing = _existing(ctx)
    _check_external(stack_plan, existing)
    clash = port_conflicts(stack_plan, call(ctx, "service.ls"))
    if clash:
        fail(clash, 2)
    for obj in stack_plan.objects:
        if not obj.external and obj.name not in existing[obj.kind]:
            _create(ctx, obj, say)
    current = {s["Name"]: s for s in _stack_services(ctx, namespace)}
    created, updated = [], []
    for service in stack_plan.services:
        params = dict(service.params)
        if with_registry_auth:
            params["registry_auth"] = registry_credentials(str(params["image"]))
        if service.name in current:
            result = call(ctx, "service.update", service=current[service.name]["ID"], replace=True, **params)
            if result.get("Changed", True):
                say(f"Updating service {service.name} (id: {result['ID']})")
                updated.append(str(result["ID"]))
        else:
            say(f"Creating service {service.name}")
            created.append(str(call(ctx, "service.create", **params)["ID"]))
    if prune:
        wanted = {s.name for s in stack_plan.services}
        for name in sorted(set(current) - wanted):
            say(f"Removing service {name}")
            call(ctx, "service.rm", services=[current[name]["ID"]])
    if not detach:
        for service_id in created:
            wait_converged(ctx, service_id, quiet=quiet)
        for service_id in updated:
            wait_update(ctx, service_id, quiet=quiet, rollback=False)


@stack.command("ls")
@click.option("--format", "fmt", default=None, help="table, json, or a template such as '{{.Name}}'.")
@click.pass_context
def stack_ls(ctx: click.Context, fmt: str | None) -> None:
    """List stacks."""
    services = call(ctx, "service.ls", filters=[f"label={NAMESPACE_LABEL}"])
    counts: dict[str, int] = {}
    if services:
        for found in call(ctx, "service.inspect", services=[s["ID"] for s in services]):
            name = found.get("spec", {}).get("annotations", {}).get("labels", {}).get(NAMESPACE_LABEL, "")
            counts[name] = counts.get(name, 0) + 1
    rows = [{"Name": name, "Services": str(count)} for name, count in sorted(counts.items())]
    print_list(
        rows,
        fmt=fmt,
        quiet=False,
        headers=("NAME", "SERVICES"),
        row=lambda r: (r["Name"], r["Services"]),
        json_keys=("Name", "Services"),
        id_of=lambda r: str(r["Name"]),
    )


@stack.command("services")
@click.argument("namespace", metavar="STACK")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@click.option("--format", "fmt", default=None, help="table, json, or a template.")
@click.option("-f", "--filter", "filters", multiple=True, help=filter_help("id, label, mode, name"))
@click.pass_context
def stack_services(
    ctx: click.Context, namespace: str, quiet: bool, fmt: str | None, filters: tuple[str, ...]
) -> None:
    """List the services in the stack."""
    from shoal.cli.service_cmd import print_services

    services = _stack_services(ctx, namespace, filters)
    if not services and not filters:  # docker's words, on stderr, and exit 0
        click.echo(f"Nothing found in stack: {namespace}", err=True)
        return
    print_services(services, quiet=quiet, fmt=fmt)


@stack.command("ps")
@click.argument("namespace", metavar="STACK")
@task_list_options
@click.pass_context
def stack_ps(
    ctx: click.Context, namespace: str, quiet: bool, no_trunc: bool, fmt: str | None, filters: tuple[str, ...]
) -> None:
    """List the tasks in the stack."""
    from shoal.cli.tasktable import list_tasks

    services = _stack_services(ctx, namespace)
    if not services:  # docker's stack ps: an error
        fail(f"nothing found in stack: {namespace}", 1)
    extra = {"filters": list(filters)} if filters else {}
    params = {"services": [s["ID"] for s in services], **extra}
    list_tasks(ctx, params, quiet=quiet, no_trunc=no_trunc, fmt=fmt)  # rows read as they come


@stack.command("rm")
@click.argument("namespaces", nargs=-1, required=True, metavar="STACK...")
@click.pass_context
def stack_rm(ctx: click.Context, namespaces: tuple[str, ...]) -> None:
    """Remove one or more stacks: their services, then their networks, secrets and configs."""
    for namespace in namespaces:
        services = _stack_services(ctx, namespace)
        existing = _existing(ctx)
        owned = {
            kind: sorted(
                n for n, o in objs.items() if (o.get("Labels") or {}).get(NAMESPACE_LABEL) == namespace
            )
            for kind, objs in existing.items()
        }
        if not services and not any(owned.values()):
            click.echo(f"Nothing found in stack: {namespace}", err=True)  # exit 0, as docker
            continue
        for service in sorted(services, key=lambda s: str(s["Name"])):
            click.echo(f"Removing service {service['Name']}")
            call(ctx, "service.rm", services=[service["ID"]])
        for kind in ("secret", "config", "network"):
            for name in owned[kind]:
                click.echo(f"Removing {kind} {name}")
                call(ctx, f"{kind}.rm", **{kind + "s": [name]})
