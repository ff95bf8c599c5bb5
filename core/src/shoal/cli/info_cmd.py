"""``shoal info``: this node's swarm membership as a readable block, like the Swarm section of
``docker info``; ``--format json`` for scripts, ``--format TEMPLATE`` for one value."""

from __future__ import annotations

import json
from typing import Any

import click

from shoal.cli.common import call
from shoal.cli.errors import fail
from shoal.cli.output import apply_template, check_template, human_duration


def _yes(value: Any) -> str:
    return "true" if value else "false"


def _seconds(value: Any) -> str:
    """docker's ``units.HumanDuration`` of a period given in seconds ("5 seconds", "3 months")."""
    return human_duration(float(value or 0))


def _cluster_lines(cluster: dict[str, Any]) -> list[str]:
    lines = [f" Managers: {cluster.get('Managers', 0)}", f" Nodes: {cluster.get('Nodes', 0)}"]
    if "TaskHistoryRetentionLimit" not in cluster:
        return lines
    raft = cluster.get("Raft", {})
    lines += [
        " Orchestration:",
        f"  Task History Retention Limit: {cluster['TaskHistoryRetentionLimit']}",
        " Raft:",
        f"  Snapshot Interval: {raft.get('SnapshotInterval', 0)}",
        f"  Number of Old Snapshots to Retain: {raft.get('KeepOldSnapshots', 0)}",
        f"  Heartbeat Tick: {raft.get('HeartbeatTick', 0)}",
        f"  Election Tick: {raft.get('ElectionTick', 0)}",
        f"  Tick: {raft.get('TickMs', 0)}ms",
        " Dispatcher:",
        f"  Heartbeat Period: {_seconds(cluster.get('HeartbeatPeriodSeconds'))}",
        " CA Configuration:",
        f"  Expiry Duration: {_seconds(cluster.get('NodeCertExpirySeconds'))}",
    ]
    external = cluster.get("ExternalCAs") or []
    if external:
        lines.append("  External CAs:")
        lines += [f"    {ca}" for ca in external]
    if cluster.get("CACertHash"):
        lines.append(f"  Root CA Hash: sha256:{cluster['CACertHash']}")
    return lines


def _store_line(store: dict[str, Any]) -> str:
    parts = [str(store.get("state", "unknown"))]
    for key, label in (
        ("role", "role"),
        ("term", "term"),
        ("leader", "leader"),
        ("applied_index", "applied"),
    ):
        if key in store:
            parts.append(f"{label} {store[key]}")
    return " Store: " + ", ".join(parts)


def render_info(result: dict[str, Any]) -> str:
    """The readable block: swarm membership first, then the plugins this node runs."""
    lines = [f"Swarm: {result.get('Swarm', 'inactive')}"]
    if result.get("NodeID"):
        is_manager = result.get("Role") == "manager"
        lines += [
            f" NodeID: {result['NodeID']}",
            f" Is Manager: {_yes(is_manager)}",
            f" ClusterID: {result.get('ClusterID', '')}",
        ]
        if is_manager:
            lines += _cluster_lines(result.get("Cluster") or {})
            lines.append(f" Is Leader: {_yes(result.get('IsLeader'))}")
        lines += [
            f" Node Address: {result.get('AdvertiseAddr', '')}",
            f" Listen Address: {result.get('BoundAddr') or result.get('ListenAddr', '')}",
            " Manager Addresses:",
            *[f"  {addr}" for addr in result.get("Managers") or []],
            f" Agent Connected: {_yes(result.get('AgentConnected'))}",
        ]
        if isinstance(result.get("Store"), dict):
            lines.append(_store_line(result["Store"]))
    lines.append(f"State Dir: {result.get('StateDir', '')}")
    lines.append("Plugins:")
    lines += [f" {role}: {name}" for role, name in sorted((result.get("Plugins") or {}).items())]
    return "\n".join(lines)


@click.command()
@click.option(
    "--format", "fmt", default=None, help="json for the raw object, or a template such as '{{.NodeID}}'."
)
@click.pass_context
def info(ctx: click.Context, fmt: str | None) -> None:
    """Show this node's swarm membership, the swarm's settings and the plugins."""
    if fmt not in (None, "", "json") and "{{" not in fmt:
        fail(f'invalid --format "{fmt}": use json or a template such as "{{{{.NodeID}}}}"')
    result = call(ctx, "info")
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    if fmt:
        check_template(fmt, list(result))
        click.echo(apply_template(fmt, result))
        return
    click.echo(render_info(result))
