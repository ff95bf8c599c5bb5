"""Child process for the crash tests: open the raft store, print its state, write and print acks.

usage: raft_crash_child.py STATE_DIR BOOTSTRAP(0|1) TAG WRITERS COUNT SNAPSHOT_INTERVAL

Prints ``STATE <json>`` once the store has started (the replayed state), then ``ACK <key>
<value>`` the moment each ``propose`` returns, flushed, so whatever the parent reads was
acknowledged before the parent's SIGKILL. Prints ``DONE`` when every writer finished.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from shoal_store_raft import RaftStore
from shoal_store_raft.options import RaftOptions


class DictMachine:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, index: int, entry: bytes) -> None:
        key, _, value = entry.decode().partition("=")
        self.data[key] = value

    def snapshot(self) -> bytes:
        return json.dumps(self.data).encode()

    def restore(self, index: int, data: bytes) -> None:
        self.data = json.loads(data)


async def main(state_dir: str, bootstrap: str, tag: str, writers: int, count: int, interval: int) -> None:
    machine = DictMachine()
    store = RaftStore(Path(state_dir), RaftOptions(snapshot_interval=interval, segment_bytes=8192))
    await store.start(machine, bootstrap=bootstrap == "1")
    out = sys.stdout
    out.write("STATE " + json.dumps(machine.data) + "\n")
    out.flush()

    async def writer(w: int) -> None:
        for n in range(count):
            key = f"{tag}-{w}-{n}"
            await store.propose(f"{key}={n}".encode())
            out.write(f"ACK {key} {n}\n")
            out.flush()

    await asyncio.gather(*(writer(w) for w in range(writers)))
    out.write("DONE\n")
    out.flush()
    await store.stop()


if __name__ == "__main__":
    d, b, t, w, c, i = sys.argv[1:7]
    asyncio.run(main(d, b, t, int(w), int(c), int(i)))
