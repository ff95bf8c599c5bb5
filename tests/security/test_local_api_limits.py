"""Issue 13, defect 6: oversized and deeply nested local-API requests.

A real daemon gets a 50 MB request and a 100,000-deep nested JSON over its Unix socket. Each
must get exactly one ``INVALID_ARGUMENT`` answer line; the daemon keeps answering, its log holds
no traceback, and the memory the request passed through is not kept.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from harness import ShoalNode

pytestmark = [pytest.mark.cluster]

FIFTY_MB = 50 * 1024 * 1024
#: What the daemon may still hold after the requests (allocator slack, not the 50 MB).
RSS_SLACK = 24 * 1024 * 1024


def answers(path: Path, payload: bytes) -> list[dict[str, Any]]:
    """Send ``payload`` from a thread (a client still writing when the answer comes) and read
    every line the daemon sends until it closes the connection."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(path))

        def send() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(payload)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        with sock.makefile("rb") as stream:
            lines = [json.loads(line) for line in stream]
        sender.join(60)
        return lines


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_oversized_and_deeply_nested_requests_get_one_error_line(node_factory: Any) -> None:
    node: ShoalNode = node_factory()
    node.start()
    assert node.proc is not None
    before = rss(node.proc.pid)
    requests = {
        "50 MB": b'{"method": "info", "params": {"x": "' + b"a" * FIFTY_MB + b'"}}\n',
        "100k deep": b'{"method": "info", "params": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}\n",
    }
    for what, payload in requests.items():
        for _ in range(2):  # twice: memory must not grow with each one
            lines = answers(node.socket, payload)
            assert len(lines) == 1, (what, lines)
            assert lines[0]["error"]["code"] == "INVALID_ARGUMENT", (what, lines)
            assert "too large" in lines[0]["error"]["message"] or "nested" in lines[0]["error"]["message"]
            assert node.info()["Swarm"] == "inactive"  # still answering
    del requests
    grown = rss(node.proc.pid) - before
    assert grown < RSS_SLACK, f"the daemon kept {grown // 1024} KiB after the requests"
    log = node.log_text()
    assert "Traceback" not in log and "Unhandled exception" not in log, log[-3000:]
