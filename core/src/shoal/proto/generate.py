"""Regenerate the protobuf modules from the .proto files (``python -m shoal.proto.generate``).

The generated ``*_pb2.py`` / ``*_pb2.pyi`` are committed so that installing shoal needs no
code generator; ``python -m shoal.proto.check`` (run in CI) fails when they are stale.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
SRC_ROOT = PROTO_DIR.parent.parent
PROTOS = ("objects.proto", "rpc.proto")


def generate(out_root: Path) -> None:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugin into ``out_root``."""
    from grpc_tools import protoc

    bin_dir = Path(sys.executable).parent
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    args = [
        "protoc",
        f"-I{SRC_ROOT}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        *(str(Path("shoal/proto") / name) for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(root: Path) -> dict[str, bytes]:
    directory = root / "shoal" / "proto"
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*_pb2.py*"))}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "shoal" / "proto").mkdir(parents=True)
        generate(out)
        for name, data in generated_files(out).items():
            shutil.copyfile(out / "shoal" / "proto" / name, PROTO_DIR / name)
            print(f"wrote {PROTO_DIR / name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
