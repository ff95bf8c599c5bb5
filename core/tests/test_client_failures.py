"""What a user is told when a call's connection fails: one rule (``Client.failure``) for every
reader of a reply, the plain one (``Client.call``) and the one that reads a listing in pieces
(``cli.piecereader``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shoal.cli.piecereader import call_in_pieces
from shoal.client import Client, ClientError, Endpoint


def _pieces(client: Client, method: str) -> Any:
    return call_in_pieces(client, method, {}, lambda head, rows: None)


def _plain(client: Client, method: str) -> Any:
    return client.call(method)


READERS: list[Callable[[Client, str], Any]] = [_plain, _pieces]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """A stand-in daemon on a Unix socket that reads each request and never answers."""
    path = str(tmp_path / "shoal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("read", READERS, ids=["plain", "pieces"])
def test_a_daemon_that_does_not_answer_in_time_is_named_with_the_call(
    daemon: str, read: Callable[[Client, str], Any]
) -> None:
    client = Client(Endpoint(unix_path=daemon), timeout=0.3)
    with pytest.raises(ClientError) as caught:
        read(client, "service.ps")
    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert caught.value.message == "the shoal daemon did not answer service.ps in time"
