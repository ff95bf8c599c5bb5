"""``shoal events``: the swarm's events as docker prints them.

The manager the CLI talks to streams events from its own ring (``shoal.manager.events``): with
``--since``, the recent ones from that time first; then new ones as they happen, until
``--until`` (for ever without it). ``--since``/``--until`` are read here, relative to this
machine's clock (docker's rule), and travel as seconds since the epoch; the manager filters.

Lines are docker's: ``2026-12-06T18:00:00.000000000Z service create ID (name=web)`` (the time
in the local zone, attributes sorted); ``--format json`` prints docker's JSON message, and a
template reads docker's field names (``{{.Type}}``, ``{{.Action}}``, ``{{.Actor.ID}}``,
``{{.Actor.Attributes.name}}``, ``{{json .}}``).
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from typing import Any

import click

from shoal.cli.common import INPUT_ERRORS
from shoal.cli.errors import fail
from shoal.cli.listfilter_opts import filter_help, filter_params
from shoal.client import Client, ClientError
from shoal.logtime import SINCE_HELP, SinceError, parse_since

#: The filter keys (the manager checks them; listed here for --help).
EVENT_FILTERS = "config, event, label, network, node, scope, secret, service, type"
_ACTION = re.compile(r"\{\{\s*(json\s+)?(\.[A-Za-z0-9_.]*)\s*\}\}")
#: Top-level fields of docker's ``events.Message`` as a template names them.
FIELDS = ("Status", "ID", "From", "Type", "Action", "Actor", "Scope", "Time", "TimeNano")


def event_time(time_nano: int) -> str:
    """docker's ``RFC3339NanoFixed`` in the local zone: nine fraction digits, ``Z`` for UTC."""
    seconds, nanos = divmod(int(time_nano), 1_000_000_000)
    when = datetime.fromtimestamp(seconds).astimezone()
    offset = when.strftime("%z")
    zone = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}{zone}"


def event_line(message: dict[str, Any]) -> str:
    """docker's ``prettyPrintEvent``: time, type, action, actor ID, then ``(k=v, ...)``."""
    actor = message.get("Actor", {})
    line = f"{event_time(message['timeNano'])} {message['Type']} {message['Action']} {actor.get('ID', '')}"
    attributes = actor.get("Attributes") or {}
    if attributes:
        line += " (" + ", ".join(f"{key}={attributes[key]}" for key in sorted(attributes)) + ")"
    return line


def template_data(message: dict[str, Any]) -> dict[str, Any]:
    """The message under the Go field names a template uses (``.Scope``, ``.TimeNano``)."""
    return {
        "Status": "",
        "ID": "",
        "From": "",
        "Type": message["Type"],
        "Action": message["Action"],
        "Actor": message["Actor"],
        "Scope": message["scope"],
        "Time": message["time"],
        "TimeNano": message["timeNano"],
    }


def check_format(template: str) -> None:
    """Refuse, in one line, a template this subset cannot run (docker refuses what does not
    parse, or names a field the message lacks)."""
    shown = template if len(template) <= 80 else template[:77] + "..."
    rest = _ACTION.sub("", template)
    if "{{" in rest or "}}" in rest:
        fail(
            f'invalid --format "{shown}": use {{{{.Field}}}}, {{{{.Actor.Attributes.KEY}}}} '
            "or {{json .}} (template actions beyond these are not supported)"
        )
    for match in _ACTION.finditer(template):
        path = [part for part in match.group(2).split(".") if part]
        if not path:
            if not match.group(1):
                fail(f'invalid --format "{shown}": use {{{{json .}}}} to print a whole event')
            continue
        if path[0] not in FIELDS:
            fail(f'invalid --format "{shown}": no field "{path[0]}" (fields: {", ".join(FIELDS)})')
        if path[0] == "Actor" and len(path) > 1 and path[1] not in ("ID", "Attributes"):
            fail(
                f'invalid --format "{shown}": no field "Actor.{path[1]}" (fields: Actor.ID, Actor.Attributes)'
            )
        if len(path) > (3 if path[0] == "Actor" else 1):
            fail(f'invalid --format "{shown}": "{".".join(path)}" has no fields')


def _lookup(data: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return ""
        if part not in data:
            return "<no value>"  # a map key the event lacks, as Go's template prints it
        data = data[part]
    return data


def apply_format(template: str, message: dict[str, Any]) -> str:
    """Run a checked template over one event."""
    data = template_data(message)

    def substitute(match: re.Match[str]) -> str:
        path = [part for part in match.group(2).split(".") if part]
        if match.group(1):
            return json.dumps(message if not path else _lookup(data, path), separators=(",", ":"))
        value = _lookup(data, path)
        if isinstance(value, dict):
            return "map[" + " ".join(f"{k}:{value[k]}" for k in sorted(value)) + "]"
        return str(value)

    return _ACTION.sub(substitute, template.replace("\\t", "\t").replace("\\n", "\n"))


def _moment(value: str, flag: str, now: float) -> float:
    try:
        return parse_since(value, now)
    except SinceError:
        fail(f'invalid {flag} "{value}": {SINCE_HELP}', 2)


@click.command("events")
@click.option("-f", "--filter", "filters", multiple=True, help=filter_help(EVENT_FILTERS))
@click.option("--format", "fmt", default=None, help='"json", or a template such as "{{.Type}} {{.Action}}".')
@click.option("--since", default="", help="Show events since a time (RFC3339, Unix time, or e.g. 10m ago).")
@click.option("--until", default="", help="Stream events until this time (same forms as --since).")
@click.pass_context
def events(ctx: click.Context, filters: tuple[str, ...], fmt: str | None, since: str, until: str) -> None:
    """Get real time events from the swarm (services, nodes, secrets, configs, networks)."""
    now = time.time()
    params: dict[str, Any] = filter_params(filters)
    if since:
        params["since"] = _moment(since, "--since", now)
    if until:
        params["until"] = _moment(until, "--until", now)
    if fmt and fmt != "json":
        check_format(fmt)
    try:
        for message in Client(ctx.find_root().params.get("host"), timeout=None).stream("events", **params):
            if fmt == "json":
                click.echo(json.dumps(message, separators=(",", ":")))
            elif fmt:
                click.echo(apply_format(fmt, message))
            else:
                click.echo(event_line(message))
            sys.stdout.flush()
    except ClientError as exc:
        fail(exc.message, 2 if exc.code in INPUT_ERRORS else 1)
    except KeyboardInterrupt:
        sys.exit(130)
