"""A detached ``service create`` uses CPython's private ``_json`` (``shoal.cli.fastpath``); on a
Python where it is missing or behaves otherwise, the command goes to click's path, which sends
the same request once through ``shoal.client``, instead of failing with a traceback."""

from __future__ import annotations

import _json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from shoal.cli import fastpath

ARGV = ["service", "create", "-d", "--name", "web", "--replicas", "4", "busybox", "true"]


def _listening(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "api.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    return server, path


def _answer(server: socket.socket, seen: list[bytes]) -> None:
    """A stand-in daemon: one request line in, a service ID out."""
    conn, _ = server.accept()
    with conn, conn.makefile("rb") as reader:
        seen.append(reader.readline())
        conn.sendall(b'{"result": {"ID": "svc1"}}\n')


@pytest.mark.parametrize(
    "breaks",
    [
        pytest.param(lambda mp: mp.setitem(sys.modules, "_json", None), id="no _json"),
        pytest.param(lambda mp: mp.setitem(sys.modules, "_socket", None), id="no _socket"),
        pytest.param(lambda mp: mp.delattr(_json, "make_scanner"), id="no scanner"),
        pytest.param(
            lambda mp: mp.setattr(_json, "make_encoder", lambda *a: None), id="encoder called otherwise"
        ),
        pytest.param(
            lambda mp: mp.setattr(_json, "encode_basestring_ascii", lambda s: f'"{s}"'), id="encoder differs"
        ),
    ],
)
def test_without_the_c_halves_the_light_path_sends_nothing_and_leaves_the_command_to_click(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breaks: object
) -> None:
    server, path = _listening(tmp_path)
    server.settimeout(0.0)
    monkeypatch.setenv("SHOAL_HOST", f"unix://{path}")
    assert fastpath.detached_create(ARGV) is not None  # a command line this path takes
    breaks(monkeypatch)  # type: ignore[operator]
    try:
        assert fastpath.run_detached_create(ARGV) is False
        with pytest.raises(BlockingIOError):  # nobody connected: nothing was sent
            server.accept()
    finally:
        server.close()


def test_with_the_c_halves_the_light_path_runs() -> None:
    assert fastpath._light_json() is True


def test_a_create_on_a_python_without_json_s_c_half_is_sent_once_by_click(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, path = _listening(tmp_path)
    monkeypatch.setenv("SHOAL_HOST", f"unix://{path}")
    seen: list[bytes] = []
    answering = threading.Thread(target=_answer, args=(server, seen), daemon=True)
    answering.start()
    probe = (
        "import sys; sys.modules['_json'] = None\n"  # as on a Python that has no ``_json``
        f"sys.argv = ['shoal', *{ARGV!r}]\n"
        "from shoal.cli.main import main\n"
        "main()\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    answering.join(10)
    assert (out.returncode, out.stdout, out.stderr) == (0, "svc1\n", "")
    found = fastpath.detached_create(ARGV)
    assert found is not None
    assert seen == [fastpath._request(found[1])]  # the request the light path sends, byte for byte
