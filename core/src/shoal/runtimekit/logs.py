"""Decode an engine's multiplexed log stream into ``LogLine`` objects.

Docker and podman's libpod API both send a container's output (for containers without a TTY)
as frames: an 8-byte header (stream kind, 3 zero bytes, big-endian payload length) followed by
the payload. With ``timestamps`` each log entry starts with an RFC 3339 time and a space.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Any

from shoal.roles.runtime import LogLine
from shoal.runtimekit.bridge import Pipe, abort_response, call

_STREAMS = {0: "stdout", 1: "stdout", 2: "stderr"}
_END = object()
_TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d) ")


def _read_exact(read: Callable[[int], bytes], size: int) -> bytes:
    chunks: list[bytes] = []
    missing = size
    while missing > 0:
        chunk = read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_frames(read: Callable[[int], bytes]) -> Iterator[tuple[str, bytes]]:
    """Yield ``(stream, payload)`` until the stream ends (or is cut mid-frame)."""
    while True:
        header = _read_exact(read, 8)
        if len(header) < 8:
            return
        size = int.from_bytes(header[4:8], "big")
        payload = _read_exact(read, size)
        yield _STREAMS.get(header[0], "stdout"), payload
        if len(payload) < size:
            return


def parse_line(task_id: str, stream: str, raw: bytes) -> LogLine:
    """One complete line, its timestamp prefix (if any) split off."""
    timestamp = 0.0
    match = _TIMESTAMP.match(raw)
    if match:
        base, fraction, zone = (part.decode() if part else "" for part in match.groups())
        zone = "+00:00" if zone == "Z" else zone
        try:
            timestamp = datetime.fromisoformat(base + fraction[:7] + zone).timestamp()
        except ValueError:
            timestamp = 0.0
        raw = raw[match.end() :]
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return LogLine(task_id=task_id, text=text, stream=stream, timestamp=timestamp)


class LineSplitter:
    """Reassemble lines per stream: a frame may hold several lines or part of one."""

    def __init__(self, task_id: str) -> None:
        self._task_id = task_id
        self._pending: dict[str, bytes] = {}

    def feed(self, stream: str, data: bytes) -> list[LogLine]:
        buffered = self._pending.pop(stream, b"") + data
        *complete, rest = buffered.split(b"\n")
        if rest:
            self._pending[stream] = rest
        return [parse_line(self._task_id, stream, line) for line in complete]

    def flush(self) -> list[LogLine]:
        """Lines left without a final newline when the stream ended."""
        lines = [parse_line(self._task_id, stream, rest) for stream, rest in self._pending.items()]
        self._pending.clear()
        return lines


async def stream_logs(
    open_response: Callable[[], Any],
    task_id: str,
    translate: Callable[[BaseException], BaseException],
) -> AsyncIterator[LogLine]:
    """Yield the lines of a streamed logs response opened by ``open_response``.

    A thread reads the response; leaving the ``async for`` early (break, cancellation) shuts
    the response's socket down, which ends that thread even while ``follow`` is waiting for
    output. Errors are passed through ``translate`` (the runtime's error mapping).
    """
    try:
        response = await call(open_response)
    except Exception as exc:
        raise translate(exc) from exc
    pipe = Pipe(asyncio.get_running_loop())

    def pump() -> None:
        splitter = LineSplitter(task_id)
        try:
            for stream, data in read_frames(response.raw.read):
                for line in splitter.feed(stream, data):
                    if not pipe.send(line):
                        return
            for line in splitter.flush():
                pipe.send(line)
        except Exception as exc:
            if not pipe.stopped.is_set():
                pipe.send(exc)
        finally:
            pipe.send(_END)
            response.close()

    threading.Thread(target=pump, name=f"shoal-logs-{task_id[:12]}", daemon=True).start()
    try:
        while True:
            item = await pipe.receive()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise translate(item) from item
            assert isinstance(item, LogLine)
            yield item
    finally:
        pipe.stop()
        abort_response(response)
