"""``shoal secret`` and ``shoal config``: create, ls, inspect, rm (docker's commands).

A secret's value is read from a file or stdin and sent to the manager once; no command ever
prints it (the API does not return it). A config's data may be inspected.
"""

from __future__ import annotations

import base64
import sys
import time
from typing import Any, BinaryIO

import click

from shoal.cli.common import call
from shoal.cli.errors import fail
from shoal.cli.inspect_cmd import inspect_options, inspect_refs
from shoal.cli.output import human_duration, print_list
from shoal.ids import short_id

#: The managers' limits, checked here too so a huge file is refused before it is sent.
LIMITS = {"secret": 500 * 1024, "config": 1000 * 1024}
JSON_KEYS = ("ID", "Name", "Driver", "CreatedAt", "UpdatedAt", "Labels")
FILTER_KEYS = ("id", "name", "label", "driver")


def _read(path: str, what: str) -> bytes:
    limit = LIMITS[what]
    try:
        if path == "-":
            data = _read_limited(sys.stdin.buffer, limit)
        else:
            with open(path, "rb") as handle:
                data = _read_limited(handle, limit)
    except OSError as exc:
        fail(f"cannot read {what} data from {path}: {exc.strerror or exc}", 2)
    if len(data) >= limit:
        fail(f"{what} data is too large: {len(data)} bytes or more, the limit is {limit // 1024} KiB", 2)
    if not data:
        fail(f"{what} data must not be empty ({path} is empty)", 2)
    return data


def _read_limited(handle: BinaryIO, limit: int) -> bytes:
    return handle.read(limit + 1)


def _filters(values: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    keys = FILTER_KEYS if what == "secret" else ("id", "name", "label")
    parsed = []
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or key not in keys:
            fail(f'invalid --filter "{text}": use {", ".join(k + "=..." for k in keys)}', 2)
        parsed.append((key, value))
    return parsed


def _matches(item: dict[str, Any], filters: list[tuple[str, str]]) -> bool:
    """docker's rules: id and name are prefixes, label is KEY or KEY=VALUE; one key given
    twice matches either value, different keys must all match."""
    by_key: dict[str, list[str]] = {}
    for key, value in filters:
        by_key.setdefault(key, []).append(value)
    labels = item.get("Labels") or {}
    for key, values in by_key.items():
        if key == "id" and not any(str(item["ID"]).startswith(v) for v in values):
            return False
        if key == "name" and not any(str(item["Name"]).startswith(v) for v in values):
            return False
        if key == "driver" and item.get("Driver") not in values:
            return False
        if key == "label":
            for wanted in values:
                label, sep, value = wanted.partition("=")
                if label not in labels or (sep and labels[label] != value):
                    return False
    return True


def _ago(seconds: float) -> str:
    return f"{human_duration(time.time() - seconds)} ago" if seconds else ""


def _ls(ctx: click.Context, what: str, quiet: bool, fmt: str | None, filters: tuple[str, ...]) -> None:
    wanted = _filters(filters, what)
    items = [i for i in call(ctx, f"{what}.ls") if _matches(i, wanted)]
    secret = what == "secret"
    headers = (
        ("ID", "NAME", "DRIVER", "CREATED", "UPDATED") if secret else ("ID", "NAME", "CREATED", "UPDATED")
    )
    print_list(
        items,
        fmt=fmt,
        quiet=quiet,
        headers=headers,
        row=lambda i: (
            short_id(i["ID"]),
            i["Name"],
            *((i["Driver"],) if secret else ()),
            _ago(float(i["CreatedAt"] or 0)),
            _ago(float(i["UpdatedAt"] or 0)),
        ),
        json_keys=JSON_KEYS if secret else tuple(k for k in JSON_KEYS if k != "Driver"),
        id_of=lambda i: str(i["ID"]),
    )


def _create_command(group: click.Group, what: str) -> None:
    @group.command("create")
    @click.argument("name")
    @click.argument("file")
    @click.option("-l", "--label", "labels", multiple=True, help=f"{what.capitalize()} labels (KEY=VALUE).")
    @click.pass_context
    def create(ctx: click.Context, /, name: str, file: str, labels: tuple[str, ...], **extra: Any) -> None:
        data = _read(file, what)
        params: dict[str, Any] = {
            "name": name,
            "data": base64.b64encode(data).decode(),
            "labels": list(labels),
        }
        if extra.get("driver"):
            params["driver"] = extra["driver"]
        click.echo(call(ctx, f"{what}.create", **params)["ID"])

    create.help = f"Create a {what} from a file or STDIN (-) as content."
    if what == "secret":
        click.option("-d", "--driver", default=None, help="Secret driver (a secrets plugin).")(create)


def _common_commands(group: click.Group, what: str) -> None:
    @group.command("ls")
    @click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
    @click.option("--format", "fmt", default=None, help="table, json or a template such as '{{.Name}}'.")
    @click.option("-f", "--filter", "filters", multiple=True, help="Filter output (id=, name=, label=).")
    @click.pass_context
    def ls(ctx: click.Context, quiet: bool, fmt: str | None, filters: tuple[str, ...]) -> None:
        _ls(ctx, what, quiet, fmt, filters)

    ls.help = f"List {what}s."

    @group.command("inspect")
    @inspect_options(what, pretty=False)
    @click.argument("refs", nargs=-1, required=True)
    @click.pass_context
    def inspect(ctx: click.Context, refs: tuple[str, ...], fmt: str | None) -> None:
        inspect_refs(ctx, [what], refs, fmt)

    inspect.help = f"Display detailed information on one or more {what}s" + (
        " (never the value)." if what == "secret" else "."
    )

    @group.command("rm")
    @click.argument("refs", nargs=-1, required=True)
    @click.pass_context
    def rm(ctx: click.Context, refs: tuple[str, ...]) -> None:
        for name in call(ctx, f"{what}.rm", **{what + "s": list(refs)}):
            click.echo(name)

    rm.help = f"Remove one or more {what}s (refused while a service uses one)."
    if what == "secret":  # as in Swarm, a secret driver is never called on removal
        rm.help += " A secret of an external driver (--driver) keeps its value in that backend."


@click.group()
def secret() -> None:
    """Manage secrets: sensitive data a service's tasks see at /run/secrets/<target>."""


@click.group()
def config() -> None:
    """Manage configs: data a service's tasks see as a file."""


for _group, _what in ((secret, "secret"), (config, "config")):
    _create_command(_group, _what)
    _common_commands(_group, _what)
