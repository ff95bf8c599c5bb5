"""The local API's connection handling: kept connections for unary calls, one per stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from shoal import boundedjson
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
        (None, {"error": {"code": "INVALID_ARGUMENT"}}),
    ):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(served.path))
            stream = sock.makefile("rb")
            sock.sendall(b"{not json\n" if first is None else json.dumps(first).encode() + b"\n")
            lines = [json.loads(line) for line in stream]  # read to EOF: the server closed it
            if "error" in last:
                assert lines[-1]["error"]["code"] == "INVALID_ARGUMENT"
                assert lines[-1]["error"]["message"].startswith("malformed request")
            else:
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


def _refused(path: Path, payload: bytes) -> list[dict[str, Any]]:
    """Send ``payload`` (from a thread, as a client that keeps writing would) and read every
    answer line until the server closes the connection."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(path))

        def send() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)  # done sending (the no-newline case needs it)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        with sock.makefile("rb") as stream:
            lines = [json.loads(line) for line in stream]
        sender.join(30)
        return lines


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"method": "echo", "params": {"value": "' + b"x" * (50 * 1024 * 1024) + b'"}}\n', "too large"),
        (b"x" * (9 * 1024 * 1024), "too large"),  # no newline at all
        (b'{"method": "echo", "params": {"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}\n", "nested"),
        (b'{"method": "echo", "params": {"value": ' + b"[" * 40 + b"]" * 40 + b"}}\n", "nested"),
        (b'["echo"]\n', "malformed request"),
        (b'{"method": "echo", "params": [1]}\n', "params must be a JSON object"),
        (b'{"method": 7}\n', "malformed request"),
    ],
    ids=["50MB", "no-newline", "100k-deep", "40-deep", "not-object", "params-list", "method-number"],
)
def test_oversized_nested_or_malformed_requests_get_one_answer_and_the_server_goes_on(
    served: _Served, payload: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    lines = _refused(served.path, payload)
    assert len(lines) == 1, lines
    assert lines[0]["error"]["code"] == "INVALID_ARGUMENT"
    assert reason in lines[0]["error"]["message"]
    client = Client(f"unix://{served.path}", timeout=5)
    assert client.call("echo", value=[[["fine"]]]) == [[["fine"]]]
    assert not [r for r in caplog.records if r.exc_info], "no traceback may be logged"


def test_the_client_reports_the_answer_to_a_request_refused_while_sending(served: _Served) -> None:
    client = Client(f"unix://{served.path}", timeout=30)
    with pytest.raises(ClientError) as failure:
        client.call("echo", value="x" * (6 * 1024 * 1024))
    assert failure.value.code == "INVALID_ARGUMENT"
    assert "too large" in failure.value.message


def test_bounded_json_limits() -> None:
    assert boundedjson.loads(b'{"a": [[1]]}') == {"a": [[1]]}
    assert not boundedjson.depth_exceeds([[1]], 2)
    assert boundedjson.depth_exceeds([[[1]]], 2)
    assert boundedjson.depth_exceeds({"a": {"b": {}}}, 2)
    for bad, reason in (
        (b"[" * 5000 + b"]" * 5000, "nested"),
        (b"{", "not JSON"),
        (b"\xff", "not JSON"),
        (b"1" * 20_001, "too large"),
    ):
        with pytest.raises(boundedjson.BadJSON, match=reason):
            boundedjson.loads(bad, max_bytes=20_000)
