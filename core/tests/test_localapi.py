"""The local API's connection handling: kept connections for unary calls, one per stream."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from shoal.client import Client, ClientError
from shoal.daemon.localapi import LocalAPIServer


class _Served:
    """A LocalAPIServer on its own event loop thread, restartable on the same path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.calls = 0
        self.server: LocalAPIServer | None = None
        self.start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        server = LocalAPIServer(self.path, lambda exc: None)

        async def echo(params: dict[str, Any]) -> Any:
            self.calls += 1
            return params.get("value")

        async def count(params: dict[str, Any]) -> AsyncIterator[int]:
            for i in range(int(params["n"])):
                yield i

        server.unary["echo"] = echo
        server.streams["count"] = count
        self._run(server.start())
        self.server = server

    def stop(self) -> None:
        assert self.server is not None
        self._run(self.server.stop())

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_Served]:
    s = _Served(tmp_path / "api.sock")
    yield s
    s.close()


def _exchange(sock: socket.socket, stream: Any, request: dict[str, Any]) -> dict[str, Any]:
    sock.sendall(json.dumps(request).encode() + b"\n")
    line = stream.readline()
    assert line, "the server closed the connection"
    answer: dict[str, Any] = json.loads(line)
    return answer


def test_one_connection_carries_successive_unary_calls_and_errors(served: _Served) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(served.path))
        stream = sock.makefile("rb")
        assert _exchange(sock, stream, {"method": "echo", "params": {"value": 1}}) == {"result": 1}
        answer = _exchange(sock, stream, {"method": "nope"})
        assert answer["error"]["code"] == "UNIMPLEMENTED"
        assert _exchange(sock, stream, {"method": "echo", "params": {"value": 2}}) == {"result": 2}


def test_a_stream_or_a_malformed_request_ends_the_connection(served: _Served) -> None:
    for first, last in (
        ({"method": "count", "params": {"n": 2}}, {"end": True}),
        (None, {"error": {"code": "INVALID_ARGUMENT", "message": "malformed request"}}),
    ):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(served.path))
            stream = sock.makefile("rb")
            sock.sendall(b"{not json\n" if first is None else json.dumps(first).encode() + b"\n")
            lines = [json.loads(line) for line in stream]  # read to EOF: the server closed it
            assert lines[-1] == last


def test_kept_client_reuses_its_connection_and_survives_a_daemon_restart(served: _Served) -> None:
    client = Client(f"unix://{served.path}", timeout=5, keep_alive=True)
    try:
        assert client.call("echo", value="a") == "a"
        assert client._kept is not None
        first = client._kept[0]
        assert client.call("echo", value="b") == "b"
        assert client._kept[0] is first  # no new connection
        assert list(client.stream("count", n=3)) == [0, 1, 2]  # streams get their own
        assert client._kept[0] is first
        served.stop()
        served.start()
        calls = served.calls
        assert client.call("echo", value="c") == "c"  # reconnected, sent once
        assert served.calls == calls + 1
        assert client._kept[0] is not first
    finally:
        client.close()


def test_kept_client_reports_a_daemon_that_is_gone(served: _Served) -> None:
    client = Client(f"unix://{served.path}", timeout=5, keep_alive=True)
    try:
        assert client.call("echo", value=1) == 1
        served.stop()
        with pytest.raises(ClientError) as failure:
            client.call("echo", value=2)
        assert failure.value.code == "UNAVAILABLE"
    finally:
        client.close()
