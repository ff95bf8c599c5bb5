"""A detached ``service create`` speaks to the daemon through ``_json`` and ``_socket`` only
(``shoal.cli.fastpath``): the bytes it sends are ``json.dumps``'s and what it reads is what
``json.loads`` reads, without importing ``json``, ``socket`` and what they import (``re``,
``enum``, ``selectors``), about half of the path's CPU with ``shoal.client`` (issue 18
item 4)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from shoal.cli import fastpath

#: What the light path leaves out; ``shoal.client`` imports the first two.
NOT_LOADED = ("json", "socket", "re", "enum", "selectors", "shoal.client")


def _answer(server: socket.socket, seen: list[bytes], lines: list[bytes]) -> None:
    """A stand-in daemon: one request line in, ``lines`` out."""
    conn, _ = server.accept()
    with conn, conn.makefile("rb") as reader:
        seen.append(reader.readline())
        for line in lines:
            conn.sendall(line)


def _create(tmp_path: Path, lines: list[bytes]) -> tuple[subprocess.CompletedProcess[str], list[bytes]]:
    sock_path = tmp_path / "api.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    seen: list[bytes] = []
    answering = threading.Thread(target=_answer, args=(server, seen, lines), daemon=True)
    answering.start()
    argv = ["shoal", "service", "create", "-d", "--name", "web", "--replicas", "4", "busybox", "true"]
    probe = (
        f"import sys; sys.argv = {argv!r}\n"
        "from shoal.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', ' '.join(m for m in {NOT_LOADED!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "SHOAL_HOST": f"unix://{sock_path}"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
        )
    finally:
        server.close()
    answering.join(10)
    return out, seen


def test_a_detached_create_loads_neither_json_nor_socket(tmp_path: Path) -> None:
    out, seen = _create(tmp_path, [b'{"result": {"ID": "svc1"}}\n'])
    assert seen and json.loads(seen[0])["method"] == "service.create", out.stderr
    assert out.stdout.splitlines() == ["svc1", "LOADED "], out.stdout + out.stderr


def test_answers_in_pieces_lines_without_a_result_and_a_warning_are_read_as_the_client_reads_them(
    tmp_path: Path,
) -> None:
    out, _ = _create(
        tmp_path,
        [b'{"progress": 1}\n{"result": {"ID": "sv', b'c2"}, "warning": "no leader"}\n'],
    )
    assert out.stdout.splitlines() == ["svc2", "LOADED "], out.stdout + out.stderr
    assert out.stderr == "Warning: no leader\n"


def test_an_error_answer_is_the_clients_error(tmp_path: Path) -> None:
    out, _ = _create(tmp_path, [b'{"error": {"code": "INVALID_ARGUMENT", "message": "bad name"}}\n'])
    assert out.stderr == "Error: bad name\n"
    assert out.stdout.splitlines()[-1].startswith("LOADED json socket")  # the client said it


def test_the_request_is_json_dumps_byte_for_byte() -> None:
    params = {
        "name": 'wéb\u2603\n"q"',
        "replicas": 4,
        "grace": 0.0,
        "ratio": 1e-7,
        "big": 10**20,
        "env": ("A=1", "B=2"),
        "labels": {"k": None, "t": True, "f": False},
        "nested": [[], {}, [1.5, -0.0, math.inf, -math.inf]],
    }
    expected = json.dumps({"method": "service.create", "params": params}).encode() + b"\n"
    assert fastpath._request(params) == expected
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        fastpath._request({"bad": {1}})


@pytest.mark.parametrize(
    "raw",
    [
        b'{"result": {"ID": "x"}}\n',
        b'{"result": [1, 2.5, -3e5, true, false, null, "\\u00e9\\ud83d\\ude00"]}',
        '{"result": "wé"}\r\n'.encode(),
        b'{"a": NaN, "b": Infinity, "c": -Infinity}\n',
        b'  {"leading": "space"}\n',
        b"\xef\xbb\xbf" + b'{"bom": 1}\n',
    ],
)
def test_a_line_is_read_as_json_loads_reads_it(raw: bytes) -> None:
    got, expected = fastpath._parsed(raw), json.loads(raw)
    assert json.dumps(got) == json.dumps(expected)


@pytest.mark.parametrize("raw", [b'{"a": 1} x\n', b'{"a": \n', b'{"a": 1}{"b": 2}\n', b"\xff{}\n", b"[1]\n"])
def test_a_line_json_refuses_is_refused_the_same_way(raw: bytes) -> None:
    try:
        json.loads(raw)
    except ValueError as exc:
        with pytest.raises(type(exc), match=str(exc).replace("(", r"\(").replace(")", r"\)")):
            fastpath._parsed(raw)
    else:  # parses, but is not an object: json's value all the same
        assert fastpath._parsed(raw) == json.loads(raw)
