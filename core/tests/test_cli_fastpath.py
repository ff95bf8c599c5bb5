"""A detached ``service create`` without click (``shoal.cli.fastpath``) does what click did.

The fast path parses the command line from ``service_flags``' tables by click's rules; these
tests hold it to click: the same options, the same request line on the socket byte for byte
(parameters in the same order), the same output, errors and exit codes, and every command
line it does not take left to click untouched.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from shoal.cli import fastpath
from shoal.cli.root import cli
from shoal.cli.service_cmd import service_create
from shoal.cli.service_flags import FLAG, LIST, VALUE, create_spec


def _kind(param: click.Option) -> str:
    if param.multiple:
        return LIST
    return FLAG if param.is_flag else VALUE


def test_the_fast_table_is_service_creates_options_as_click_declares_them() -> None:
    options = [p for p in service_create.params if isinstance(p, click.Option)]
    unset = service_create.make_context("create", ["img"]).params  # each value when not given
    declared = [(p.name, tuple(p.opts), tuple(p.secondary_opts), _kind(p), unset[p.name]) for p in options]
    assert declared == create_spec()
    # What the fast parser assumes of every option: a string or a flag, one value at a time,
    # nothing from the environment, no callback, no optional value, nothing required.
    for p in options:
        assert isinstance(p.type, (click.types.StringParamType, click.types.BoolParamType)), p.name
        assert p.nargs == 1 and p.envvar is None and p.callback is None, p.name
        assert not p.required and not p.is_eager and p.expose_value, p.name
        assert not p._flag_needs_value, p.name
    arguments = [
        (p.name, p.nargs, p.required) for p in service_create.params if isinstance(p, click.Argument)
    ]
    assert arguments == [("image", 1, True), ("args", -1, False)]


class StandIn:
    """A stand-in daemon on a Unix socket: records each request line, answers ``answer``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[bytes] = []
        self.answer: dict[str, Any] = {"result": {"ID": "4f0c2d9e1a7b"}}
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                self.lines.append(lines.readline())
                conn.sendall(json.dumps(self.answer).encode() + b"\n")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    monkeypatch.delenv("_SHOAL_COMPLETE", raising=False)
    monkeypatch.setenv("SHOAL_HOST", f"unix://{tmp_path}/api.sock")
    stand_in = StandIn(tmp_path / "api.sock")
    yield stand_in
    stand_in.close()


def _fast(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout, stderr of the fast path (which must take ``argv``)."""
    code = 0
    try:
        assert fastpath.run_detached_create(argv), argv
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _click(argv: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout, stderr of click's path, as ``main`` ran it before the fast path."""
    shown = CliRunner().invoke(cli, argv, prog_name="shoal")
    if shown.exception is not None and not isinstance(shown.exception, SystemExit):
        raise shown.exception
    return shown.exit_code, shown.stdout, shown.stderr


TAKEN = [
    ["service", "create", "-d", "busybox"],
    ["service", "create", "--detach", "--replicas", "4", "busybox", "sleep", "3600"],
    ["service", "create", "-d", "--name", "web", "--replicas=4", "--stop-grace-period", "0s", "nginx:1"],
    ["-H", "PLACEHOLDER", "service", "create", "-d", "busybox"],  # the socket of the stand-in
    ["service", "create", "--replicas", "2", "-d", "--name", "a", "--replicas", "3", "img", "-d", "x"],
    ["service", "create", "-dq", "-e", "A=1", "-eB=2", "--env", "C=3", "--env=D=4", "img"],
    ["service", "create", "-qde", "A=1", "-p", "80:80", "--publish=81:81", "img", "--", "a"],
    ["service", "create", "-d", "--read-only", "--init=false", "--tty=true", "--no-init", "img"],
    ["service", "create", "-d", "-t", "--no-read-only", "--no-healthcheck", "--no-resolve-image", "img"],
    ["service", "create", "-d", "--mode", "global", "--constraint", "node.role==worker", "--", "img"],
    ["service", "create", "-d", "--label", "a=b", "--label", "c=d", "--name", "", "--", "-img", "--x"],
    ["service", "create", "-d", "--mount", "type=tmpfs,target=/t", "--limit-memory", "-5", "img"],
    ["service", "create", "-d", "-w", "/tmp", "-u", "1000", "-uroot", "--hostname=h", "-u0", "img", "-"],
    ["service", "create", "-d", "--update-parallelism", "2", "--rollback-order", "start-first", "img"],
    ["service", "create", "-d", "--cap-add", "NET_ADMIN", "--log-opt", "max-size=1m", "img"],
    ["service", "create", "-d", "--reserve-cpu", "0.5", "--health-cmd", "true", "--dns", "1.1.1.1", "img"],
    ["--host", "unix:///elsewhere.sock", "-H", "PLACEHOLDER", "service", "create", "-d", "img"],
]


@pytest.mark.parametrize("argv", TAKEN, ids=[" ".join(a) for a in TAKEN])
def test_the_fast_path_sends_prints_and_exits_as_click_does(
    daemon: StandIn, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    argv = [f"unix://{daemon.path}" if word == "PLACEHOLDER" else word for word in argv]
    fast = _fast(argv, capsys)
    slow = _click(argv)
    assert len(daemon.lines) == 2
    assert daemon.lines[0] == daemon.lines[1]  # the same request, byte for byte
    assert json.loads(daemon.lines[0])["method"] == "service.create"
    assert fast == slow == (0, "4f0c2d9e1a7b\n", "")


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"error": {"code": "INVALID_ARGUMENT", "message": 'invalid --replicas "x":\n  a number'}}, 2),
        ({"error": {"code": "ALREADY_EXISTS", "message": "service web already exists"}}, 2),
        ({"error": {"code": "UNAVAILABLE", "message": "no leader"}}, 1),
        ({"result": {"ID": "abc"}, "warning": "answered from a stale copy"}, 0),
        ({"result": {"ID": "\x1b[31mred\x1b[0m"}}, 0),  # click strips ANSI codes on a pipe
    ],
)
def test_refusals_warnings_and_odd_ids_end_as_with_click(
    daemon: StandIn, capsys: pytest.CaptureFixture[str], answer: dict[str, Any], code: int
) -> None:
    daemon.answer = answer
    argv = ["service", "create", "-d", "--replicas", "x", "busybox"]
    fast = _fast(argv, capsys)
    slow = _click(argv)
    assert fast == slow
    assert fast[0] == code


def test_no_daemon_is_the_same_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHOAL_HOST", f"unix://{tmp_path}/none.sock")
    argv = ["service", "create", "-d", "busybox"]
    fast = _fast(argv, capsys)
    assert fast == _click(argv)
    assert fast[0] == 1 and fast[2].startswith("Error: cannot connect to the shoal daemon at unix://")


LEFT_TO_CLICK = [
    ["service", "create", "busybox"],  # waits for convergence
    ["service", "create", "-d"],  # no image
    ["service", "create", "-d", "-h"],
    ["service", "create", "--help"],
    ["service", "create", "-dh", "img"],
    ["service", "create", "-d", "--nme", "web", "img"],  # a typo
    ["service", "create", "-d", "-x", "img"],
    ["service", "create", "-d", "--name"],  # no value
    ["service", "create", "-d", "--detach=true", "img"],  # not a docker boolean: click refuses
    ["service", "create", "-d", "--read-only=maybe", "img"],
    ["service", "create", "-d", "--healthcheck=false", "img"],  # click's --no-healthcheck
    ["service", "create", "-d", "--env-file", "f.env", "img"],
    ["service", "create", "-d", "--with-registry-auth", "img"],
    ["service", "-h", "create", "-d", "img"],
    ["service", "--", "create", "-d", "img"],
    ["service", "ls"],
    ["-c", "prod", "service", "create", "-d", "img"],
    ["--tlsverify", "service", "create", "-d", "img"],
    ["--version"],
    ["-H", "tcp://10.0.0.1:2376", "service", "create", "-d", "img"],
    ["-H"],
    [],
]


@pytest.mark.parametrize("argv", LEFT_TO_CLICK, ids=[" ".join(a) or "(none)" for a in LEFT_TO_CLICK])
def test_every_other_command_line_is_left_to_click_before_anything_is_sent(
    daemon: StandIn, argv: list[str]
) -> None:
    assert not fastpath.run_detached_create(argv)
    assert daemon.lines == []


def test_without_a_unix_socket_named_click_chooses_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_HOST", raising=False)  # the current context decides: click's path
    assert fastpath.detached_create(["service", "create", "-d", "img"]) is None
    monkeypatch.setenv("SHOAL_HOST", "/run/x.sock")
    assert fastpath.detached_create(["service", "create", "-d", "img"]) == (
        "/run/x.sock",
        {"name": "", "mode": "replicated", "image": "img", "args": []},
    )


def test_shell_completion_is_left_to_click(daemon: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_SHOAL_COMPLETE", "bash_complete")
    assert not fastpath.run_detached_create(["service", "create", "-d", "img"])
