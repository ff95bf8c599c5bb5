"""A task's secrets and configs on a tmpfs of their own, for an engine on this host.

Swarm's way (moby ``container_operations_unix.go``): the daemon mounts a tmpfs for the
container, writes each file with its owner and mode, remounts the tmpfs read-only and
bind-mounts it into the container. Here the runtime does the same before creating the
container: one tmpfs per task at ``<files dir>/<task id>`` (``nodev,nosuid,noexec``, sized to
its files), secrets under ``secrets/`` (bind-mounted at ``/run/secrets``, so the container sees
a read-only tmpfs there), each config under ``configs/<n>`` (bind-mounted at its target).

Why not the engine's own tmpfs mounts: a created container's tmpfs does not exist until it
starts, so files copied in before start (``put_archive``) land in its writable layer, on the
engine's disk. A tmpfs made here never touches a disk, and the engine sees it because it runs
on this host, in this mount namespace. It needs ``CAP_SYS_ADMIN`` (the daemon runs as root,
like dockerd); without it the task fails with one line saying so.

``release`` unmounts it when the task's container is removed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.roles.runtime import SECRETS_DIR, RuntimeError_, TaskFile

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MNT_DETACH = 2
#: Where a runtime built without a plugin context (tests) mounts its tasks' tmpfs.
DEFAULT_DIR = Path("/run/shoal/task-files")
#: Room for the directory entries on top of the data.
SIZE_SLACK = 64 * 1024

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


@dataclass(frozen=True)
class Bind:
    """A host path to bind-mount read-only at ``target`` in the container."""

    source: str
    target: str


def _mount(source: str, target: Path, fstype: str | None, flags: int, data: str) -> None:
    result = _libc.mount(
        source.encode(), str(target).encode(), fstype.encode() if fstype else None, flags, data.encode()
    )
    if result != 0:
        code = ctypes.get_errno()
        hint = " (the shoal daemon must run as root to mount secrets)" if code == errno.EPERM else ""
        raise RuntimeError_(f"cannot mount the task's secrets tmpfs at {target}: {os.strerror(code)}{hint}")


def task_dir(base: Path, task_id: str) -> Path:
    if not task_id or "/" in task_id or task_id in (".", ".."):
        raise RuntimeError_(f"invalid task ID {task_id!r} for its secrets directory")
    return base / task_id


def binds(files: Sequence[TaskFile], root: Path) -> list[Bind]:
    """The bind mounts that show ``files`` (already written under ``root``) in the container."""
    result: list[Bind] = []
    if any(f.secret for f in files):
        result.append(Bind(str(root / "secrets"), SECRETS_DIR))
    configs = [f for f in files if not f.secret]
    for index, file in enumerate(configs):
        result.append(Bind(str(root / "configs" / str(index)), file.target))
    return result


def check(files: Sequence[TaskFile]) -> None:
    """Refuse targets the layout cannot hold, in one line."""
    seen: set[str] = set()
    for file in files:
        if file.target in seen:
            raise RuntimeError_(f"two secrets or configs use the target {file.target}")
        seen.add(file.target)
        if file.secret:
            name = file.target.removeprefix(SECRETS_DIR + "/")
            if name == file.target or not name or "/" in name or name in (".", ".."):
                raise RuntimeError_(f"secret target {file.target} is not a file directly under {SECRETS_DIR}")
        elif not file.target.startswith("/") or file.target == "/":
            raise RuntimeError_(f"config target {file.target!r} is not an absolute file path")


def materialise(base: Path, task_id: str, files: Sequence[TaskFile]) -> list[Bind]:
    """Mount the task's tmpfs with ``files`` (read-only once written) and return its binds.

    Idempotent: an existing mount for the task (a repeated prepare) is reused as it is.
    """
    if not files:
        return []
    check(files)
    root = task_dir(base, task_id)
    if os.path.ismount(root):
        return binds(files, root)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)  # only root (and the engine, as root) may reach a task's files
    root.mkdir(mode=0o700, exist_ok=True)
    size = tmpfs_size(files)
    options = f"mode=0755,size={size}"
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _mount("tmpfs", root, "tmpfs", flags, options)
    try:
        _write_all(root, files)
        _mount("tmpfs", root, None, flags | MS_REMOUNT | MS_RDONLY, options)
    except OSError as exc:
        release(base, task_id)
        raise RuntimeError_(f"cannot write the task's secrets and configs: {exc.strerror or exc}") from None
    except BaseException:
        release(base, task_id)
        raise
    return binds(files, root)


def tmpfs_size(files: Sequence[TaskFile]) -> int:
    """Bytes the task's tmpfs needs: a tmpfs gives every file whole pages (a 10-byte secret
    takes 4 KiB), plus room for the directories."""
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(max(1, -(-len(f.data) // page)) * page for f in files) + SIZE_SLACK


def _write_all(root: Path, files: Sequence[TaskFile]) -> None:
    secrets_dir = root / "secrets"
    configs_dir = root / "configs"
    configs = [f for f in files if not f.secret]
    for directory, wanted in ((secrets_dir, len(files) > len(configs)), (configs_dir, bool(configs))):
        if wanted:
            directory.mkdir()
            os.chmod(directory, 0o755)  # the daemon's umask is 077; containers run as any user
    for file in files:
        if file.secret:
            _write(secrets_dir / file.target.rsplit("/", 1)[1], file)
    for index, file in enumerate(configs):
        _write(configs_dir / str(index), file)


def _write(path: Path, file: TaskFile) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(file.data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchown(fd, file.uid, file.gid)
        os.fchmod(fd, file.mode)
    finally:
        os.close(fd)


def release(base: Path, task_id: str) -> None:
    """Unmount the task's tmpfs (its data is gone with it) and remove the mount point."""
    try:
        root = task_dir(base, task_id)
    except RuntimeError_:
        return
    if os.path.ismount(root):
        if _libc.umount2(str(root).encode(), MNT_DETACH) != 0:
            code = ctypes.get_errno()
            raise RuntimeError_(f"cannot unmount the task's secrets tmpfs at {root}: {os.strerror(code)}")
    try:
        root.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RuntimeError_(f"cannot remove the task's secrets directory {root}: {exc.strerror}") from None
