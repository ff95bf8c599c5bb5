"""The ``shoal`` command line: docker's swarm commands, talking to the local daemon.

Every client command reaches the daemon through its Unix socket (``-H unix://PATH`` or
``SHOAL_HOST``; default ``/run/shoal/shoal.sock``). Errors are one line on stderr with a
non-zero exit: 2 for bad input (flags, plugin choice), 1 for anything the daemon refused.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from shoal import __version__
from shoal.agent.enginelimits import DEFAULT_MAX_CONCURRENT_ENGINE_CALLS
from shoal.cli.common import INPUT_ERRORS, call, choose_daemon, remote_options
from shoal.cli.errors import fail, one_line
from shoal.cli.inspect_opts import inspect_options
from shoal.cli.listfilter_opts import TASK_FILTERS, filter_help, filter_params, task_list_options
from shoal.cli.output import print_list
from shoal.cli.registry_auth import REGISTRY_AUTH_HELP, registry_credentials
from shoal.cli.service_opts import (
    DockerFlagsCommand,
    common_options,
    create_options,
    env_from_files,
    params_of,
    update_options,
)
from shoal.cli.swarm_opts import cluster_setting_options
from shoal.cli.tasktable import collector_paused, print_tasks
from shoal.cli.tasktable import task_rows as task_rows  # where callers found it
from shoal.client import DEFAULT_SOCKET, Client, ClientError
from shoal.ids import short_id

#: Command groups imported only when used: ``service create`` should not pay for the imports
#: of ``inspect`` (protobuf, Docker's shapes, Go templates), ``stack`` (compose), ``events``
#: or ``hollow``; the CLI's start-up counts in every command's time (issue 18 item 4).
LAZY_COMMANDS = {
    "info": "shoal.cli.info_cmd",
    "context": "shoal.cli.context_cmd",
    "hollow": "shoal.cli.hollow_cmd",
    "inspect": "shoal.cli.inspect_cmd",
    "events": "shoal.cli.events_cmd",
    "secret": "shoal.cli.secret_cmd",
    "config": "shoal.cli.secret_cmd",
    "network": "shoal.cli.network_cmd",
    "stack": "shoal.cli.stack_cmd",
}


class ShoalGroup(click.Group):
    """Turns click's usage errors into one line too: what is wrong, and where help is.

    ``plugin`` and commands added by extension plugins are loaded only when asked for, so
    that everyday commands start without importing the plugin machinery.
    """

    _extensions_loaded = False

    def _load_lazy(self) -> None:
        if ShoalGroup._extensions_loaded:
            return
        ShoalGroup._extensions_loaded = True
        from shoal.cli.plugin_cmd import plugin
        from shoal.loader import PluginError, PluginLoader

        self.add_command(plugin)
        try:
            extensions = PluginLoader()
            if extensions.load_extensions():
                extensions.hook.shoal_cli_commands(cli=self)
        except PluginError as exc:
            fail(str(exc), 2)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name) or self._builtin(cmd_name)
        if command is None:
            self._load_lazy()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_lazy()
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def _builtin(self, cmd_name: str) -> click.Command | None:
        """A built-in command group of ``LAZY_COMMANDS``, imported the first time it is asked for."""
        where = LAZY_COMMANDS.get(cmd_name)
        if where is None:
            return None
        command = getattr(importlib.import_module(where), cmd_name)
        assert isinstance(command, click.Command)
        self.add_command(command)
        return command

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "shoal"
            fail(f"{exc.format_message()} (see '{where} --help')", 2)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code or 1)
        except click.exceptions.Abort:
            fail("aborted", 1)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.group(cls=ShoalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@remote_options
@click.version_option(__version__, prog_name="shoal")
@click.pass_context
def cli(ctx: click.Context, /, host: str | None, **tls: Any) -> None:
    """shoal: Docker Swarm mode as a Python plugin microkernel."""
    ctx.obj = {"config_plugins": {}}  # shoal.cli.plugin_cmd.CONFIG_PLUGINS_KEY
    choose_daemon(ctx)


# --------------------------------------------------------------------------- daemon


@cli.command()
# The paths are strings here, made ``Path``s in ``daemon``: pathlib is not loaded by the client
# commands (the CLI's start-up counts in every command's time, issue 18 item 4).
@click.option("--state-dir", type=click.Path(), default="/var/lib/shoal", show_default=True)
@click.option("--socket", "socket_path", type=click.Path(), default=DEFAULT_SOCKET, show_default=True)
@click.option(
    "--listen-addr", default="0.0.0.0:2377", show_default=True, help="HOST:PORT for node-to-node RPC."
)
@click.option("--advertise-addr", default="", help="HOST[:PORT] other nodes use to reach this one.")
@click.option("--hostname", default="", help="Hostname this node reports (default: the engine's).")
@click.option("--plugin", "plugins", multiple=True, metavar="ROLE=NAME", help="Choose a plugin (repeatable).")
@click.option(
    "--plugin-opt",
    "plugin_opts",
    multiple=True,
    metavar="ROLE.KEY=VALUE",
    help="Option for a role's plugin (repeatable), e.g. runtime.host=unix:///run/podman/podman.sock.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(),
    default=None,
    help="TOML config file with a [plugins] table (and [control]: listen, tlscacert, tlscert, tlskey).",
)
@click.option(
    "--max-concurrent-engine-calls",
    "max_engine_calls",
    type=click.IntRange(min=1),
    default=None,
    show_default=f"what the runtime plugin declares, else {DEFAULT_MAX_CONCURRENT_ENGINE_CALLS}",
    help="Container engine operations this node runs at once; more tasks wait their turn.",
)
@click.option(
    "--control-listen",
    default=None,
    metavar="tcp://ADDR:PORT",
    help="Also serve the control API on TCP, with mutual TLS (needs the three --tls options).",
)
@click.option("--tlscacert", default=None, help="CA whose client certificates --control-listen accepts.")
@click.option("--tlscert", default=None, help="This daemon's certificate for --control-listen.")
@click.option("--tlskey", default=None, help="The key of --tlscert.")
@click.option(
    "--node-generic-resource",
    "node_generic_resources",
    multiple=True,
    metavar="KIND=COUNT",
    help="A resource this node offers to --generic-resource reservations, e.g. gpu=2 (repeatable).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def daemon(
    state_dir: str,
    socket_path: str,
    listen_addr: str,
    advertise_addr: str,
    hostname: str,
    plugins: tuple[str, ...],
    plugin_opts: tuple[str, ...],
    config_file: str | None,
    max_engine_calls: int | None,
    control_listen: str | None,
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
    node_generic_resources: tuple[str, ...],
    log_level: str,
) -> None:
    """Run a shoal node (like dockerd)."""
    import asyncio
    import logging
    from pathlib import Path

    from shoal import loader
    from shoal.cli.common import control_listener, swarm_root_file
    from shoal.daemon.node import DaemonConfig, serve
    from shoal.roles import StoreOpenError

    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    state, config_path = Path(state_dir), Path(config_file) if config_file else None
    try:
        loader.parse_plugin_args(plugins)
        config_plugins = loader.load_config_plugins(config_path) if config_path else {}
        config = DaemonConfig(
            state_dir=state.absolute(),
            socket=Path(socket_path).absolute(),
            listen_addr=listen_addr,
            advertise_addr=advertise_addr,
            hostname=hostname,
            plugins=list(plugins),
            plugin_options=loader.parse_plugin_options(plugin_opts),
            config_plugins=config_plugins,
            max_engine_calls=max_engine_calls,
            generic_resources=node_resources(node_generic_resources),
            control_listener=control_listener(
                control_listen, tlscacert, tlscert, tlskey, config_path, swarm_root_file(state)
            ),
        )
        asyncio.run(serve(config))
    except loader.PluginError as exc:
        fail(str(exc), 2)
    except KeyboardInterrupt:
        pass
    except (OSError, RuntimeError, ValueError, StoreOpenError) as exc:
        fail(f"shoal daemon: {one_line(exc)}", 1)


def node_resources(values: tuple[str, ...]) -> list[Any]:
    """``--node-generic-resource KIND=COUNT`` values; one line and exit 2 for a bad one."""
    from shoal.containeropts import OptionError, generic_resource

    try:
        return [generic_resource(value, "--node-generic-resource") for value in values]
    except OptionError as exc:
        fail(str(exc), 2)


# --------------------------------------------------------------------------- swarm


@cli.group()
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


# --------------------------------------------------------------------------- node


@cli.group()
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
    with collector_paused():
        result = call(ctx, "service.ps", node=node_ref, compact=True, **filter_params(filters))
        print_tasks(result, quiet=quiet, no_trunc=no_trunc, fmt=fmt)


# --------------------------------------------------------------------------- service


@cli.group()
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
    params = params_of(options)
    params.update(image=image, args=list(args))
    params.pop("no_resolve_image", None)  # shoal never resolves an image to a remote digest
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
    with collector_paused():
        result = call(ctx, "service.ps", services=list(services), compact=True, **filter_params(filters))
        print_tasks(result, quiet=quiet, no_trunc=no_trunc, fmt=fmt)


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


def main() -> None:
    """Entry point of the ``shoal`` command."""
    cli(prog_name="shoal")


if __name__ == "__main__":
    main()
