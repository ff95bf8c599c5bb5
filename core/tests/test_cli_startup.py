"""The CLI's start-up stays light (issue 18 item 4): every command's time includes it.

``service create`` used to import protobuf, Docker's shapes, the Go template engine, the
Compose loader and the engine gate before doing anything (about 0.1-0.2 s of a 0.7 s create
on an idle machine). The command groups that need them are imported when asked for.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
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


#: What ``service create --detach`` on the local socket never needs (TLS, the daemon's logging,
#: the progress display, registry credentials, ID generation, and with ``SHOAL_HOST`` set the
#: contexts), about 20 ms of a ~65 ms start-up on a quiet machine, several times that under
#: load (issue 18 item 4). Nor pathlib (about 4 ms with urllib.parse, ipaddress, fnmatch), the
#: TLS configuration module, or difflib (click's "did you mean" list, built when it tries
#: ``-d`` as a long flag first, then dropped); ``importlib.util`` is what setuptools'
#: editable-install finder loaded at every interpreter start (with pathlib) before the root
#: project's editable install became a plain path (pyproject.toml's package-dir).
NOT_FOR_A_DETACHED_CREATE = (
    "ssl",
    "pathlib",
    "importlib.util",
    "shoal.controltls",
    "difflib",
    "logging",
    "shutil",
    "secrets",
    "base64",
    "shoal.cli.progress",
    "shoal.cli.contexts",
    "shoal.cli.context_cmd",
)


def _answer_one_create(server: socket.socket, seen: list[dict[str, object]]) -> None:
    """A stand-in daemon: one request line in, one ``service.create`` answer out."""
    conn, _ = server.accept()
    with conn, conn.makefile("rb") as lines:
        seen.append(json.loads(lines.readline()))
        conn.sendall(json.dumps({"result": {"ID": "svc1"}}).encode() + b"\n")


@pytest.mark.parametrize("detach", ["--detach", "-d"])
def test_a_detached_service_create_loads_no_tls_logging_or_progress(tmp_path: Path, detach: str) -> None:
    sock_path = tmp_path / "api.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    seen: list[dict[str, object]] = []
    answering = threading.Thread(target=_answer_one_create, args=(server, seen), daemon=True)
    answering.start()
    argv = ["shoal", "service", "create", detach, "--name", "web", "--replicas", "4", "busybox", "true"]
    probe = (
        f"import sys; sys.argv = {argv!r}\n"
        "from shoal.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', ' '.join(m for m in {NOT_FOR_A_DETACHED_CREATE!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "SHOAL_HOST": f"unix://{sock_path}"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
        )
    finally:
        server.close()
    answering.join(10)
    assert seen and seen[0]["method"] == "service.create", out.stderr  # it did reach the daemon
    assert out.stdout.splitlines() == ["svc1", "LOADED "], out.stdout + out.stderr
