"""``shoal plugin``: see which plugins are installed and which one each role would use.

``plugin ls`` imports every installed plugin module to read its declared API version, and
builds each sound one's provider once in a throwaway directory (nothing is started), so a plugin
that cannot be imported, lacks its factory hook, raises in it or declares the wrong API version
shows up as broken, with the reason in its row, instead of surprising the operator at ``swarm
init`` or when a manager becomes leader.

The selection shown follows the daemon's precedence: ``--plugin`` > ``SHOAL_PLUGINS`` > the
config file's ``[plugins]`` table > defaults. The config table is taken from the root click
context's ``obj`` when it is a mapping holding it under ``CONFIG_PLUGINS_KEY`` (``cli/main.py``
puts it there after reading the config file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

from shoal.cli.errors import handle_errors
from shoal.loader import (
    PluginRecord,
    list_installed,
    parse_plugin_args,
    parse_plugin_options,
    resolve_selection,
)

#: Key of the config file's ``[plugins]`` table in the root context's ``obj`` mapping.
CONFIG_PLUGINS_KEY = "config_plugins"

TABLE_HEADERS = ("ROLE", "NAME", "DISTRIBUTION", "VERSION", "API", "SELECTED")


@click.group("plugin")
def plugin() -> None:
    """Manage plugins."""


@plugin.command("ls")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format: a table, or one JSON object per line.",
)
@click.option(
    "--plugin",
    "plugin_args",
    multiple=True,
    metavar="ROLE=NAME",
    help="Show the selection as if the daemon were started with this choice (repeatable).",
)
@click.option(
    "--plugin-opt",
    "plugin_opts",
    multiple=True,
    metavar="ROLE.KEY=VALUE",
    help="Option the plugins of ROLE are built with to check them, as the daemon's (repeatable).",
)
@click.pass_context
@handle_errors
def ls(ctx: click.Context, fmt: str, plugin_args: tuple[str, ...], plugin_opts: tuple[str, ...]) -> None:
    """List installed plugins: role, name, distribution, version, API version, selected."""
    selection = resolve_selection(parse_plugin_args(plugin_args), config=_config_plugins(ctx))
    records = list_installed(selection, parse_plugin_options(plugin_opts))
    if fmt == "json":
        for record in records:
            click.echo(json.dumps(record_to_json(record)))
    else:
        click.echo(render_table(records), nl=False)


def record_to_json(record: PluginRecord) -> dict[str, Any]:
    """The ``--format json`` object of one row (docker-style capitalised keys)."""
    return {
        "Role": record.role,
        "Name": record.name,
        "Distribution": record.distribution,
        "Version": record.version,
        "APIVersion": record.api_version,
        "Selected": record.selected,
        "Error": record.error,
    }


def render_table(records: Sequence[PluginRecord]) -> str:
    """docker-style table: columns padded by three spaces; ``ERROR`` only when a row has one."""
    headers: list[str] = list(TABLE_HEADERS)
    with_error = any(r.error for r in records)
    if with_error:
        headers.append("ERROR")
    rows: list[list[str]] = []
    for r in records:
        row = [
            r.role,
            r.name,
            r.distribution or "-",
            r.version or "-",
            "-" if r.api_version is None else str(r.api_version),
            "*" if r.selected else "",
        ]
        if with_error:
            row.append(r.error)
        rows.append(row)
    widths = [max(len(line[i]) for line in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for line in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _config_plugins(ctx: click.Context) -> Mapping[str, Any] | None:
    obj = ctx.find_root().obj
    if isinstance(obj, Mapping):
        table = obj.get(CONFIG_PLUGINS_KEY)
        if isinstance(table, Mapping):
            return table
    return None


if __name__ == "__main__":
    plugin(prog_name="shoal plugin")
