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
    # Nor click itself, typing, inspect or dataclasses, nor any module of the command tree:
    # on a Unix socket a detached create runs without click (shoal.cli.fastpath), 30-40 ms
    # less than the ~70 ms the whole process took (issue 18 item 4).
    "click",
    "typing",
    "inspect",
    "dataclasses",
    "shoal.cli.root",
    "shoal.cli.service_cmd",
    "shoal.cli.service_opts",
    "shoal.cli.node_cmd",
    "shoal.cli.swarm_cmd",
    "shoal.cli.daemon_cmd",
)


def _answer_one_create(
    server: socket.socket, seen: list[dict[str, object]], result: object = ("ID", "svc1")
) -> None:
    """A stand-in daemon: one request line in, one answer out (``service.create``'s)."""
    conn, _ = server.accept()
    with conn, conn.makefile("rb") as lines:
        seen.append(json.loads(lines.readline()))
        answer = dict([result]) if isinstance(result, tuple) else result
        conn.sendall(json.dumps({"result": answer}).encode() + b"\n")


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


#: What a command of one group never needs: the other groups' modules (each builds its own
#: click options at import), nor the heavy imports of inspect, stack or events.
OTHER_GROUPS = (
    "shoal.cli.daemon_cmd",
    "shoal.cli.swarm_cmd",
    "shoal.cli.node_cmd",
    "shoal.cli.stack_cmd",
    "shoal.cli.network_cmd",
    "shoal.cli.secret_cmd",
    "shoal.cli.inspect_cmd",
    "shoal.cli.events_cmd",
    "shoal.cli.hollow_cmd",
    "shoal.cli.plugin_cmd",
    *HEAVY,
)


@pytest.mark.parametrize(
    ("argv", "result"),
    [
        (["service", "rm", "web"], ["web"]),
        (["service", "create", "--env-file", "/dev/null", "-d", "busybox"], {"ID": "svc1"}),
    ],
)
def test_a_service_command_through_click_loads_no_other_command_group(
    tmp_path: Path, argv: list[str], result: object
) -> None:
    sock_path = tmp_path / "api.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    seen: list[dict[str, object]] = []
    answering = threading.Thread(target=_answer_one_create, args=(server, seen, result), daemon=True)
    answering.start()
    probe = (
        f"import sys; sys.argv = {['shoal', *argv]!r}\n"
        "from shoal.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('CLICK', 'shoal.cli.service_cmd' in sys.modules)\n"
        f"print('LOADED', ' '.join(m for m in {OTHER_GROUPS!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "SHOAL_HOST": f"unix://{sock_path}"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
        )
    finally:
        server.close()
    answering.join(10)
    assert seen, out.stderr  # it did reach the daemon
    assert out.stdout.splitlines()[-2:] == ["CLICK True", "LOADED "], out.stdout + out.stderr


#: ``shoal --help``'s list of commands when every group was defined in one module (before
#: 2026-12-07 16:00 UTC): the lazy tree lists the same commands with the same short help.
EAGER_COMMANDS = """\
Commands:
  config   Manage configs: data a service's tasks see as a file.
  context  Manage contexts: named swarms (daemon addresses and their client...
  daemon   Run a shoal node (like dockerd).
  events   Get real time events from the swarm (services, nodes, secrets,...
  hollow   Run COUNT hollow worker nodes (real agents, fake containers)...
  info     Show this node's swarm membership, the swarm's settings and the...
  inspect  Return low-level information on swarm objects: services, nodes,...
  network  Manage swarm networks (overlay networks across the swarm's nodes).
  node     Manage swarm nodes.
  plugin   Manage plugins.
  secret   Manage secrets: sensitive data a service's tasks see at...
  service  Manage swarm services.
  stack    Manage swarm stacks (services, networks, secrets and configs...
  swarm    Manage the swarm.
"""


def test_the_lazy_tree_lists_the_commands_the_eager_one_did() -> None:
    shown = CliRunner().invoke(cli, ["--help"], prog_name="shoal")
    assert shown.exit_code == 0
    assert shown.output.endswith(EAGER_COMMANDS), shown.output


@pytest.mark.parametrize(
    ("typo", "offered"),
    [("servce", "'service'"), ("nod", "'node'"), ("swam", "'swarm'"), ("daemn", "'daemon'")],
)
def test_a_mistyped_command_is_offered_the_lazy_groups_as_before(typo: str, offered: str) -> None:
    # A new process: in this one, the groups other tests loaded would be offered too.
    probe = f"import sys; sys.argv = ['shoal', {typo!r}]\nfrom shoal.cli.main import main\nmain()\n"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 2
    assert shown.stderr == f"Error: No such command '{typo}'. Did you mean {offered}? (see 'shoal --help')\n"
