"""The CLI's start-up stays light (issue 18 item 4): every command's time includes it.

``service create`` used to import protobuf, Docker's shapes, the Go template engine, the
Compose loader and the engine gate before doing anything (about 0.1-0.2 s of a 0.7 s create
on an idle machine). The command groups that need them are imported when asked for.
"""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner
from shoal.cli.main import LAZY_COMMANDS, cli

HEAVY = ("google.protobuf", "yaml", "shoal.proto.objects_pb2", "shoal.dockershapes", "shoal.cli.gotemplate")


def test_importing_the_cli_does_not_import_protobuf_compose_or_templates() -> None:
    probe = f"import sys, shoal.cli.main; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_lazy_command_loads_and_is_listed() -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["--help"])
    assert listed.exit_code == 0
    for name in LAZY_COMMANDS:
        assert f"  {name} " in listed.output
        shown = runner.invoke(cli, [name, "--help"])
        assert shown.exit_code == 0, shown.output
        assert f"Usage: cli {name}" in shown.output or f"Usage: shoal {name}" in shown.output
