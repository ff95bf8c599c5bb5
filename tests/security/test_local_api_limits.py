"""Issue 13, defect 6: oversized and deeply nested local-API requests.

A real daemon gets a 50 MB request and a 100,000-deep nested JSON over its Unix socket. Each
must get exactly one ``INVALID_ARGUMENT`` answer line; the daemon keeps answering, its log holds
no traceback, and the memory the request passed through is not kept.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from harness import ShoalNode
from shoal.client import Client, ClientError

pytestmark = [pytest.mark.cluster]

FIFTY_MB = 50 * 1024 * 1024
#: What the daemon may still hold after the requests (allocator slack, not the 50 MB).
RSS_SLACK = 24 * 1024 * 1024


def answers(path: Path, payload: bytes) -> list[dict[str, Any]]:
    """Send ``payload`` (small enough for the socket's buffers) as raw bytes and read every line
    the daemon sends until it closes the connection."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(path))
        sock.sendall(payload)
        with sock.makefile("rb") as stream:
            return [json.loads(line) for line in stream]


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
    client = Client(f"unix://{node.socket}", timeout=60)
    nested = b'{"method": "info", "params": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}\n"
    for _ in range(2):  # twice: memory must not grow with each one
        # 50 MB through the CLI's own client: it is still sending when the answer comes.
        with pytest.raises(ClientError) as refused:
            client.call("info", x="a" * FIFTY_MB)
        assert refused.value.code == "INVALID_ARGUMENT" and "too large" in refused.value.message
        lines = answers(node.socket, nested)
        assert len(lines) == 1, lines
        assert lines[0]["error"]["code"] == "INVALID_ARGUMENT" and "nested" in lines[0]["error"]["message"]
        assert node.info()["Swarm"] == "inactive"  # still answering
    grown = rss(node.proc.pid) - before
    assert grown < RSS_SLACK, f"the daemon kept {grown // 1024} KiB after the requests"
    log = node.log_text()
    assert "Traceback" not in log and "Unhandled exception" not in log, log[-3000:]
