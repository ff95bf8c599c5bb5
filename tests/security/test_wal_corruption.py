"""Issue 13, defect 2: a corrupted WAL record length must stop the daemon, never shorten the log.

A flipped bit in the length of a record in the middle of a segment used to be taken for a torn
last record: the daemon cut the WAL there, said the data "was never acknowledged" and started
on old state. Now it refuses to start with one line naming the file, the offset and the remedy,
and leaves the file as it found it.
"""

from __future__ import annotations

import struct
import subprocess

import pytest
from harness import ShoalNode

pytestmark = [pytest.mark.cluster]

#: Segments written since WAL format 2 open with this magic and use 12-byte record headers
#: (length, payload CRC, header CRC); older ones have 8-byte headers (length, payload CRC).
#: The test reads both so that it also runs (and fails) on the code from before the fix.
V2_MAGIC = b"SHWAL\x00\x02\n"
#: Format 3 (a manager's WAL since encryption at rest, issue 15) frames records as format 2.
V3_MAGIC = b"SHWAL\x00\x03\n"


def record_offsets(raw: bytes) -> tuple[list[int], int]:
    """The offset of every record in a segment and the size of its header."""
    framed = raw.startswith((V2_MAGIC, V3_MAGIC))
    start, header = (len(V2_MAGIC), 12) if framed else (0, 8)
    offsets, off = [], start
    while off + header <= len(raw):
        (length,) = struct.unpack_from("<I", raw, off)
        offsets.append(off)
        off += header + length
    return offsets, header


def test_a_corrupted_record_length_in_the_middle_stops_the_daemon_with_one_line(
    node_factory: object,
) -> None:
    node: ShoalNode = node_factory()  # type: ignore[operator]
    node.start()
    node.init()
    for index in range(12):
        node.ok("service", "create", "--name", f"s{index}", "--replicas", "0", "--detach", "shoal-busybox:1")
    node.stop()

    segment = sorted((node.state_dir / "plugins" / "store-raft" / "wal").glob("*.wal"))[-1]
    raw = bytearray(segment.read_bytes())
    offsets, _ = record_offsets(bytes(raw))
    assert len(offsets) > 20, f"expected many records in {segment}, found {len(offsets)}"
    victim = offsets[len(offsets) // 2]
    raw[victim + 3] ^= 0x10  # the length's top byte: the record now "runs past the end of the file"
    segment.write_bytes(bytes(raw))
    corrupted = bytes(raw)
    log_before = len(node.log_text())

    node.start(wait=False)
    assert node.proc is not None
    try:
        node.proc.wait(60)
    except subprocess.TimeoutExpired:
        node.stop()
        raise AssertionError(
            f"the daemon started on a corrupted WAL; log: {node.log_text()[log_before:][-2000:]}"
        ) from None
    output = node.log_text()[log_before:]
    assert node.proc.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    line = errors[0]
    assert str(segment) in line and f"at offset {victim}" in line, line
    for remedy in ("restore", "join", "--force-new-cluster"):
        assert remedy in line, line
    assert segment.read_bytes() == corrupted, "the daemon changed the corrupted WAL"
    assert "never acknowledged" not in output, output
