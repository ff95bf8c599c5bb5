"""The top of the ``shoal`` command tree: the root group, its global options, and where each
command group is defined.

Every group lives in its own module and is imported only when it is invoked, listed (``shoal
--help``, completion) or asked for by name: ``service create`` does not build the options of
``daemon``, ``swarm`` or ``node``, nor import what ``inspect`` (protobuf, Docker's shapes, Go
templates), ``stack`` (compose) or ``events`` need; the CLI's start-up counts in every
command's time (issue 18 item 4).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from shoal import __version__
from shoal.cli.common import choose_daemon, remote_options
from shoal.cli.errors import fail

#: Command groups (and ``daemon``) imported only when used, by the module defining each.
LAZY_COMMANDS = {
    "daemon": "shoal.cli.daemon_cmd",
    "swarm": "shoal.cli.swarm_cmd",
    "node": "shoal.cli.node_cmd",
    "service": "shoal.cli.service_cmd",
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

#: The commands click offered for a mistyped one when they were defined with the root group.
ALWAYS_OFFERED = ("daemon", "swarm", "node", "service")


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

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """click's, but a mistyped command is still offered the groups that were defined with
        this one before they became lazy: click's "Did you mean" draws only on the commands
        already added (``shoal servce``: "Did you mean 'service'?", as before)."""
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            names = [*ALWAYS_OFFERED, *(name for name in self.commands if name not in ALWAYS_OFFERED)]
            raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=names, ctx=exc.ctx) from None

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
