"""``shoal swarm``: init, join, join-token, leave, inspect, update, unlock-key, unlock.

Its own module, imported only when a ``swarm`` command runs or is listed (the CLI's start-up
counts in every command's time, issue 18 item 4).
"""

from __future__ import annotations

import json
import sys

import click

from shoal.cli.common import call
from shoal.cli.errors import fail
from shoal.cli.inspect_opts import inspect_options
from shoal.cli.swarm_opts import cluster_setting_options


@click.group()
def swarm() -> None:
    """Manage the swarm."""


EXTERNAL_CA_HELP = (
    "External CA: protocol=cfssl,url=https://HOST:PORT/api/v1/cfssl/sign[,cacert=FILE] (repeatable)."
)


def external_ca_values(values: tuple[str, ...]) -> list[dict[str, str]]:
    """Parse ``--external-ca`` flags; ``cacert=FILE`` is read here and sent as PEM."""
    from shoal.externalca import parse_flag
    from shoal.specs import SpecError

    parsed = []
    for value in values:
        try:
            fields = parse_flag(value)
        except SpecError as exc:
            fail(str(exc), 2)
        if "cacert" in fields:
            try:
                with open(fields["cacert"]) as fh:
                    fields["cacert_pem"] = fh.read()
            except OSError as exc:
                fail(f"cannot read the external CA's cacert file {fields['cacert']}: {exc.strerror}", 2)
        parsed.append(fields)
    return parsed


def read_file(path: str | None, what: str) -> str:
    if path is None:
        return ""
    try:
        with open(path) as fh:
            return fh.read()
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}", 2)


@swarm.command("init")
@click.option("--advertise-addr", default="", help="Advertised address (HOST[:PORT]).")
@click.option("--listen-addr", default="", help="Listen address (HOST:PORT), default the daemon's.")
@click.option("--availability", default="active", help="Availability of this node: active, pause or drain.")
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="ROLE=NAME",
    help="Cluster-wide plugin choice (store, scheduler, ca, transport, secrets, network), repeatable.",
)
@click.option("--external-ca", "external_cas", multiple=True, help=EXTERNAL_CA_HELP)
@click.option(
    "--bootstrap-cert",
    default=None,
    help="With --external-ca: a client certificate the external CA issued out of band, used once to "
    "get this manager's own certificate from it.",
)
@click.option("--bootstrap-key", default=None, help="The key of --bootstrap-cert.")
@click.option(
    "--force-new-cluster",
    is_flag=True,
    help="Recover a swarm that lost its quorum: restart this manager as the only one, keeping its state.",
)
@click.option(
    "--default-addr-pool",
    "default_addr_pools",
    multiple=True,
    help="Address pool (CIDR) overlay network subnets come from (default 10.0.0.0/8), repeatable.",
)
@click.option(
    "--default-addr-pool-mask-length",
    default=None,
    help="Prefix length of each overlay network subnet from the pools (default 24).",
)
@click.option(
    "--autolock",
    is_flag=False,
    flag_value="true",
    default=None,
    metavar="[=true|false]",
    help="Enable manager autolocking (requiring an unlock key to start a stopped manager).",
)
@cluster_setting_options
@click.pass_context
def swarm_init(
    ctx: click.Context,
    /,
    advertise_addr: str,
    listen_addr: str,
    availability: str,
    plugins: tuple[str, ...],
    external_cas: tuple[str, ...],
    bootstrap_cert: str | None,
    bootstrap_key: str | None,
    force_new_cluster: bool,
    default_addr_pools: tuple[str, ...],
    default_addr_pool_mask_length: str | None,
    autolock: str | None,
    **settings: str | None,
) -> None:
    """Initialize a swarm with this node as its first manager."""
    from shoal import loader

    try:
        loader.parse_plugin_args(plugins)
    except loader.PluginError as exc:
        fail(str(exc), 2)
    if bool(bootstrap_cert) != bool(bootstrap_key):
        fail("--bootstrap-cert and --bootstrap-key go together", 2)
    result = call(
        ctx,
        "swarm.init",
        advertise_addr=advertise_addr,
        listen_addr=listen_addr,
        availability=availability,
        plugins=list(plugins),
        external_cas=external_ca_values(external_cas),
        bootstrap_cert=read_file(bootstrap_cert, "the bootstrap certificate"),
        bootstrap_key=read_file(bootstrap_key, "the bootstrap key"),
        force_new_cluster=force_new_cluster,
        default_addr_pool=list(default_addr_pools),
        default_addr_pool_mask_length=default_addr_pool_mask_length,
        autolock=autolock_flag(autolock),
        **settings,
    )
    click.echo(f"Swarm initialized: current node ({result['NodeID']}) is now a manager.")
    if result.get("UnlockKey"):
        click.echo("")
        click.echo(unlock_advice(result["UnlockKey"]), nl=False)


@swarm.command("join")
@click.option("--token", required=True, help="The worker (or manager) join token.")
@click.option("--advertise-addr", default="", help="Advertised address (HOST[:PORT]).")
@click.option("--listen-addr", default="", help="Listen address (HOST:PORT), default the daemon's.")
@click.option("--availability", default="active", help="Availability of this node: active, pause or drain.")
@click.argument("remote_addr")
@click.pass_context
def swarm_join(
    ctx: click.Context, token: str, advertise_addr: str, listen_addr: str, availability: str, remote_addr: str
) -> None:
    """Join a swarm as a node: MANAGER_ADDR is HOST[:PORT] of a manager."""
    result = call(
        ctx,
        "swarm.join",
        token=token,
        remote_addr=remote_addr,
        advertise_addr=advertise_addr,
        listen_addr=listen_addr,
        availability=availability,
    )
    click.echo(f"This node joined a swarm as a {result.get('Role', 'worker')}.")


@swarm.command("join-token")
@click.argument("role")
@click.option("-q", "--quiet", is_flag=True, help="Only display the token.")
@click.option("--rotate", is_flag=True, help="Rotate the join token (only future joins are affected).")
@click.pass_context
def swarm_join_token(ctx: click.Context, role: str, quiet: bool, rotate: bool) -> None:
    """Manage join tokens: ROLE is worker or manager."""
    if role not in ("worker", "manager"):
        fail(f'unknown role "{role}": use worker or manager', 2)
    result = call(ctx, "swarm.join_token", role=role, rotate=rotate)
    if quiet:
        click.echo(result["Token"])
        return
    if rotate:
        click.echo(f"Successfully rotated {role} join token.\n")
    click.echo(f"To add a {role} to this swarm, run the following command:\n")
    click.echo(f"    shoal swarm join --token {result['Token']} {result['ManagerAddr']}\n")


@swarm.command("leave")
@click.option("-f", "--force", is_flag=True, help="Force this node to leave the swarm, ignoring warnings.")
@click.pass_context
def swarm_leave(ctx: click.Context, force: bool) -> None:
    """Leave the swarm."""
    call(ctx, "swarm.leave", force=force)
    click.echo("Node left the swarm.")


@swarm.command("inspect")
@inspect_options("swarm", pretty=False)
@click.pass_context
def swarm_inspect(ctx: click.Context, fmt: str | None) -> None:
    """Display the swarm's settings: Docker's GET /swarm shape, or --format's template of it."""
    from google.protobuf import json_format

    from shoal import dockershapes
    from shoal.cli.inspect_cmd import check_format, print_objects
    from shoal.proto import objects_pb2 as pb

    template = check_format(fmt)
    stored = call(ctx, "swarm.inspect")
    shape = dockershapes.swarm_shape(json_format.ParseDict(stored, pb.Cluster(), ignore_unknown_fields=True))
    if template is None:
        click.echo(json.dumps(shape, indent=4, ensure_ascii=False))
    else:
        print_objects([shape], template, fmt or "")


@swarm.command("update")
@cluster_setting_options
@click.option("--external-ca", "external_cas", multiple=True, help=EXTERNAL_CA_HELP)
@click.option("--raft-tick", default=None, help="Raft tick interval of the managers' store (e.g. 100ms).")
@click.option("--election-tick", default=None, help="Ticks without a leader before an election (default 10).")
@click.option("--heartbeat-tick", default=None, help="Ticks between leader heartbeats (default 1).")
@click.option(
    "--autolock",
    is_flag=False,
    flag_value="true",
    default=None,
    metavar="[=true|false]",
    help="Change manager autolocking setting (true|false).",
)
@click.pass_context
def swarm_update(
    ctx: click.Context,
    /,
    external_cas: tuple[str, ...],
    raft_tick: str | None,
    election_tick: str | None,
    heartbeat_tick: str | None,
    autolock: str | None,
    **settings: str | None,
) -> None:
    """Update the swarm."""
    call(
        ctx,
        "swarm.update",
        **settings,
        external_cas=external_ca_values(external_cas),
        raft_tick=raft_tick,
        election_tick=election_tick,
        heartbeat_tick=heartbeat_tick,
        autolock=autolock,
    )
    click.echo("Swarm updated.")
    if autolock is not None and autolock_flag(autolock):
        key = call(ctx, "swarm.unlock_key").get("UnlockKey", "")
        if key:
            click.echo(unlock_advice(key), nl=False)


def autolock_flag(value: str | None) -> bool:
    """``--autolock``, ``--autolock=true|false`` (docker's boolean flag); exit 2 on anything else."""
    from shoal.manager.autolock import parse_autolock
    from shoal.specs import SpecError

    try:
        return value is not None and parse_autolock(value)
    except SpecError as exc:
        fail(str(exc), 2)


def unlock_advice(key: str) -> str:
    """Docker's words after a new unlock key (``printUnlockCommand``), with shoal's command."""
    return (
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n"
        f"command and provide the following key:\n\n    {key}\n\n"
        "Please remember to store this key in a password manager, since without it you\n"
        "will not be able to restart the manager.\n"
    )


@swarm.command("unlock-key")
@click.option("-q", "--quiet", is_flag=True, help="Only display the unlock key.")
@click.option("--rotate", is_flag=True, help="Rotate the unlock key.")
@click.pass_context
def swarm_unlock_key(ctx: click.Context, quiet: bool, rotate: bool) -> None:
    """Manage the unlock key."""
    result = call(ctx, "swarm.unlock_key", rotate=rotate)
    if rotate and not quiet:
        click.echo("Successfully rotated manager unlock key.\n")
    key = result.get("UnlockKey", "")
    if not key:
        fail("no unlock key is set (turn autolock on with `shoal swarm update --autolock=true`)", 1)
    if quiet:
        click.echo(key)
        return
    click.echo(unlock_advice(key), nl=False)


@swarm.command("unlock")
@click.pass_context
def swarm_unlock(ctx: click.Context) -> None:
    """Unlock a locked manager: reads the unlock key from a prompt, or from stdin."""
    swarm_state = call(ctx, "info").get("Swarm")
    if swarm_state == "inactive":
        fail("This node is not part of a swarm", 1)
    if swarm_state != "locked":
        fail("swarm is not locked", 1)
    if sys.stdin.isatty():
        key = click.prompt("Please enter unlock key", hide_input=True, default="", show_default=False)
    else:
        key = sys.stdin.readline()
    if not key.strip():
        fail("no unlock key given: type it at the prompt or pipe it on stdin (SWMKEY-1-...)", 2)
    call(ctx, "swarm.unlock", key=key.strip())
