"""Regenerate ``etcdapi_pb2.py``/``.pyi`` from ``etcdapi.proto`` (``python -m shoal_store_etcd.generate``).

The generated modules are committed so that installing the plugin needs no code generator.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    from grpc_tools import protoc

    bin_dir = Path(sys.executable).parent
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    args = [
        "protoc",
        f"-I{HERE.parent}",
        f"--python_out={HERE.parent}",
        f"--mypy_out={HERE.parent}",
        str(Path("shoal_store_etcd") / "etcdapi.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    main()
