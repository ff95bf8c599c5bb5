"""Fail when the committed generated protobuf code differs from what the .proto files give."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from shoal.proto.generate import PROTO_DIR, generate, generated_files


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "shoal" / "proto").mkdir(parents=True)
        generate(out)
        fresh = generated_files(out)
    committed = {p.name: p.read_bytes() for p in sorted(PROTO_DIR.glob("*_pb2.py*"))}
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    if stale:
        print(
            f"generated protobuf code is stale: {', '.join(stale)}; run python -m shoal.proto.generate",
            file=sys.stderr,
        )
        return 1
    print(f"generated protobuf code is fresh ({len(fresh)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
