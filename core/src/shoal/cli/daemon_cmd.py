"""``shoal daemon``: run a node (like dockerd).

Its own module, imported only when it runs or is listed: no client command builds its options
(the CLI's start-up counts in every command's time, issue 18 item 4).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from shoal.agent.enginelimits import DEFAULT_MAX_CONCURRENT_ENGINE_CALLS
from shoal.cli.errors import fail, one_line
from shoal.client import DEFAULT_SOCKET


@click.command()
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
