"""The ``shoal`` command line: docker's swarm commands, talking to the local daemon.

Every client command reaches the daemon through its Unix socket (``-H unix://PATH`` or
``SHOAL_HOST``; default ``/run/shoal/shoal.sock``). Errors are one line on stderr with a
non-zero exit: 2 for bad input (flags, plugin choice), 1 for anything the daemon refused.

This module is the entry point and nothing else, so that starting the CLI costs no more than
the command needs (issue 18 item 4): a detached ``service create`` on a Unix socket runs
without click (``fastpath``); every other command goes through the click tree (``root``),
whose groups are imported one by one as they are used. The names the tree used to have here
(``cli``, ``LAZY_COMMANDS``, ``task_rows``, ...) are still found here, on first use.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs the fast path ~2 ms
if TYPE_CHECKING:
    from typing import Any

#: Where the names this module used to define now live (``from shoal.cli.main import cli``).
_MOVED = {
    "cli": "shoal.cli.root",
    "ShoalGroup": "shoal.cli.root",
    "LAZY_COMMANDS": "shoal.cli.root",
    "daemon": "shoal.cli.daemon_cmd",
    "swarm": "shoal.cli.swarm_cmd",
    "node": "shoal.cli.node_cmd",
    "NODE_JSON_KEYS": "shoal.cli.node_cmd",
    "service": "shoal.cli.service_cmd",
    "print_services": "shoal.cli.service_cmd",
    "task_rows": "shoal.cli.tasktable",
}


def main() -> None:
    """Entry point of the ``shoal`` command."""
    from shoal.cli.fastpath import run_detached_create

    if run_detached_create(sys.argv[1:]):
        return
    from shoal.cli.root import cli

    cli(prog_name="shoal")


def __getattr__(name: str) -> Any:
    """The tree's names, imported from their modules when first asked for here."""
    where = _MOVED.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(where), name)


if __name__ == "__main__":
    main()
