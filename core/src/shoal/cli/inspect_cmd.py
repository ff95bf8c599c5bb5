"""``inspect`` output: Docker's JSON shapes, ``--format`` Go templates, ``--pretty`` blocks.

The daemon answers ``*.inspect`` with its stored objects (protobuf field names); this module
parses them back into protobuf objects and prints them through ``shoal.dockershapes``, as
``docker service inspect`` / ``node inspect`` / ``inspect`` (tasks) / ``secret inspect`` /
``config inspect`` / ``network inspect`` print them: a JSON array indented by four spaces, or
one rendered template per object. As docker: every reference is looked up, the objects found
are printed (``[]`` when none was), and each one not found is an ``Error: no such ...`` line
with exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from google.protobuf import json_format
from google.protobuf.message import Message

from shoal import dockershapes
from shoal.cli import gotemplate
from shoal.cli.common import INPUT_ERRORS, client
from shoal.cli.errors import fail
from shoal.cli.inspect_opts import inspect_options as inspect_options
from shoal.cli.inspect_pretty import node_pretty, service_pretty
from shoal.client import ClientError
from shoal.proto import objects_pb2 as pb

JSON = dict[str, Any]

#: kind -> (daemon method, its list parameter, protobuf type, shape function); a network
#: comes from the manager already in docker's shape (``netobjects.inspect_shape``): no type.
KINDS: dict[str, tuple[str, str, type[Message] | None, Callable[[Any], JSON]]] = {
    "service": ("service.inspect", "services", pb.Service, dockershapes.service_shape),
    "node": ("node.inspect", "nodes", pb.Node, dockershapes.node_shape),
    "task": ("task.inspect", "tasks", pb.Task, dockershapes.task_shape),
    "secret": ("secret.inspect", "secrets", pb.Secret, dockershapes.secret_shape),
    "config": ("config.inspect", "configs", pb.Config, dockershapes.config_shape),
    "network": ("network.inspect", "networks", None, dict),
}
#: docker's words for a missing object where they differ from "no such KIND" (its client's
#: ``objectNotFoundError``, which ``docker network inspect`` prints).
MISSING = {"network": "No such network"}
PRETTY: dict[str, Callable[[JSON], str]] = {"service": service_pretty, "node": node_pretty}


def shape(kind: str, stored: JSON) -> JSON:
    """One object as the daemon sent it -> Docker's shape (unknown fields from a newer
    daemon are ignored)."""
    _, _, message_type, to_shape = KINDS[kind]
    if message_type is None:
        return to_shape(stored)
    message = json_format.ParseDict(stored, message_type(), ignore_unknown_fields=True)
    result = to_shape(message)
    if kind == "service" and stored.get("WithRegistryAuth"):
        result["WithRegistryAuth"] = True  # shoal's: set with --with-registry-auth (never the value)
    if kind == "node" and "certificate" in stored:
        result["Certificate"] = _certificate(message)  # type: ignore[arg-type]
    return result


def _certificate(node: pb.Node) -> JSON:
    """shoal's addition to docker's node: where its certificate issuance stands (an external
    CA's refusal shows here)."""
    certificate = node.certificate
    shown: JSON = {"State": pb.Certificate.IssuanceState.Name(certificate.state).lower()}
    if certificate.err:
        shown["Error"] = certificate.err
    if certificate.not_after:
        shown["NotAfter"] = dockershapes.rfc3339(certificate.not_after)
    return shown


def fetch(ctx: click.Context, kind: str, ref: str) -> JSON:
    """One object in Docker's shape (``ClientError`` when it cannot be had)."""
    method, key, _, _ = KINDS[kind]
    found = client(ctx).call(method, **{key: [ref]})
    return shape(kind, found[0])


def check_format(fmt: str | None) -> list[gotemplate.Node] | None:
    if not fmt:
        return None
    try:
        return gotemplate.parse(fmt)
    except gotemplate.TemplateError as exc:
        fail(f'invalid --format "{fmt}": template parsing error: {exc}', 2)


def print_objects(objects: list[JSON], template: list[gotemplate.Node] | None, fmt: str) -> None:
    if template is None:
        click.echo(json.dumps(objects, indent=4, ensure_ascii=False))
        return
    for item in objects:
        try:
            click.echo(gotemplate.render(template, item))
        except gotemplate.TemplateError as exc:
            fail(f'template "{fmt}": executing: {exc}', 1)


def inspect_refs(
    ctx: click.Context, kinds: list[str], refs: tuple[str, ...], fmt: str | None, pretty: bool = False
) -> None:
    """Look every reference up (as the first of ``kinds`` that has it), print what was found,
    then one error line per reference that was not (exit 1), as docker does."""
    if pretty and fmt:
        fail("--format is incompatible with human friendly format (--pretty)", 2)
    template = check_format(fmt)
    found: list[tuple[str, JSON]] = []
    missing: list[str] = []
    for ref in refs:
        looked_up = _lookup(ctx, kinds, ref)
        if looked_up is None:
            missing.append(ref)
        else:
            found.append(looked_up)
    if pretty:
        for index, (kind, item) in enumerate(found):
            if index:
                click.echo("")
            click.echo(PRETTY[kind](item), nl=False)
    elif found or template is None:  # as docker: "[]" when none was found, then the errors
        print_objects([item for _, item in found], template, fmt or "")
    if missing:
        what = kinds[0] if len(kinds) == 1 else "object"
        words = MISSING.get(what, f"no such {what}")
        for ref in missing[:-1]:
            click.echo(f"Error: {words}: {ref}", err=True)
        fail(f"{words}: {missing[-1]}", 1)


def _lookup(ctx: click.Context, kinds: list[str], ref: str) -> tuple[str, JSON] | None:
    for kind in kinds:
        try:
            return kind, fetch(ctx, kind, ref)
        except ClientError as exc:
            if exc.code == "NOT_FOUND":
                continue
            if len(kinds) > 1 and exc.code == "FAILED_PRECONDITION" and kind != kinds[0]:
                continue
            fail(exc.message, 2 if exc.code in INPUT_ERRORS else 1)
    return None


@click.command("inspect")
@click.option(
    "--type",
    "kind",
    type=click.Choice(sorted(KINDS)),
    default=None,
    help="Only look for this type of object (default: service, node, task, secret, config, network in turn).",
)
@inspect_options("any", pretty=False)
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, kind: str | None, fmt: str | None, refs: tuple[str, ...]) -> None:
    """Return low-level information on swarm objects: services, nodes, tasks, secrets, configs, networks."""
    inspect_refs(ctx, [kind] if kind else list(KINDS), refs, fmt)
