"""``shoal hollow``: run N hollow worker nodes against a swarm (a testing and scale tool).

Each node joins with the token (its own key, CSR and certificate), keeps its own dispatcher
session over mutual TLS and runs the real agent on the ``fake`` runtime (see
``shoal.hollow``). It runs until interrupted; the nodes stay in the swarm (Down once stopped)
until removed with ``node rm``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click

from shoal.cli.errors import fail


def _plugin_options(values: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    runtime: dict[str, str] = {}
    transport: dict[str, str] = {}
    for value in values:
        key, sep, setting = value.partition("=")
        role, dot, name = key.partition(".")
        if not sep or not dot or not name or role not in ("runtime", "transport"):
            raise click.UsageError(
                f'invalid --plugin-opt "{value}": use runtime.KEY=VALUE or transport.KEY=VALUE'
            )
        (runtime if role == "runtime" else transport)[name] = setting
    return runtime, transport


def _managers(value: str) -> list[str]:
    managers = [part.strip() for part in value.split(",") if part.strip()]
    for addr in managers:
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.UsageError(f'invalid --managers address "{addr}": use HOST:PORT[,HOST:PORT...]')
    if not managers:
        raise click.UsageError("--managers needs at least one HOST:PORT")
    return managers


@click.command("hollow")
@click.option("--managers", "managers_text", required=True, help="Managers to join through: HOST:PORT[,...].")
@click.option("--token", envvar="SHOAL_HOLLOW_TOKEN", required=True, help="A worker join token.")
@click.option("--count", type=click.IntRange(min=1), required=True, help="Hollow nodes to run.")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes to spread them over.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the nodes keep their certificates and task DBs (default: a new temporary directory).",
)
@click.option(
    "--prefix", default="hollow", show_default=True, help="Hostname prefix: PREFIX-00000, PREFIX-00001, ..."
)
@click.option(
    "--join-concurrency",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Joins in flight at once, per process.",
)
@click.option(
    "--plugin-opt",
    "plugin_opts",
    multiple=True,
    help="runtime.KEY=VALUE for the fake runtime (start_delay, failure_rate, exit_after...), or transport.KEY=VALUE.",
)
@click.option("--first-index", type=click.IntRange(min=0), default=0, hidden=True)
def hollow(
    managers_text: str,
    token: str,
    count: int,
    processes: int,
    state_dir: Path | None,
    prefix: str,
    join_concurrency: int,
    plugin_opts: tuple[str, ...],
    first_index: int,
) -> None:
    """Run COUNT hollow worker nodes (real agents, fake containers) against a swarm."""
    import asyncio

    from shoal import tokens
    from shoal.hollow.fleet import FleetConfig, run_fleet, run_processes

    managers = _managers(managers_text)
    runtime_options, transport_options = _plugin_options(plugin_opts)
    try:
        tokens.parse(token.strip())
    except tokens.TokenError as exc:
        fail(f"invalid --token: {exc}")
    if state_dir is None:
        state_dir = Path(tempfile.mkdtemp(prefix="shoal-hollow-"))
        click.echo(f"hollow: state in {state_dir}")
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if processes > 1:

        def argv_for(first: int, size: int) -> list[str]:
            argv = [
                "hollow",
                "--managers",
                ",".join(managers),
                "--count",
                str(size),
                "--state-dir",
                str(state_dir),
                "--prefix",
                prefix,
                "--first-index",
                str(first_index + first),
                "--join-concurrency",
                str(join_concurrency),
            ]
            for option in plugin_opts:
                argv += ["--plugin-opt", option]
            return argv

        os.environ["SHOAL_HOLLOW_TOKEN"] = token.strip()
        raise SystemExit(run_processes(argv_for, count, processes))
    config = FleetConfig(
        managers=managers,
        token=token.strip(),
        count=count,
        state_dir=state_dir,
        first_index=first_index,
        prefix=prefix,
        join_concurrency=join_concurrency,
        runtime_options=runtime_options,
        transport_options=transport_options,
    )

    def say(line: str) -> None:
        click.echo(line)

    status: Any = asyncio.run(run_fleet(config, say))
    raise SystemExit(status)
