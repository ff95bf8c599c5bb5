"""Crash-safe file primitives: atomic replace and directory fsync.

A rename is only durable once the directory entry is on disk, hence ``fsync_dir`` after every
create, rename and unlink that recovery depends on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | Sequence[bytes]) -> None:
    """Write ``data`` (or its parts, one after the other) to ``path`` so a crash leaves either
    the old file or the new one."""
    tmp = path.with_name(f".tmp-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for part in (data,) if isinstance(data, bytes) else data:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
