"""Who may read what a node writes under its state dir: only the user the daemon runs as.

The state dir holds the node's private key, a manager's copy of the store (the root CA key, the
services and their env, the secrets) and a worker's task DB (every assigned task's spec, env
included). So every file there is 0600 and every directory 0700, like Swarm's
``/var/lib/docker/swarm``. Two layers, because either alone is forgotten somewhere:

- the daemon process runs with umask 077, so whatever is created without an explicit mode (by
  the kernel, a plugin or a library) is private;
- the files that matter are created with an explicit 0600 anyway (SQLite, for one, gives its
  ``-wal`` and ``-shm`` files the main file's mode whatever the umask says).

A state dir written by an older version is tightened once at start.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("shoal.daemon")

DAEMON_UMASK = 0o077
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_GROUP_OTHER = 0o077


def restrict_umask() -> None:
    """Make everything this process creates from now on private to its user."""
    os.umask(DAEMON_UMASK)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) 0700; an existing directory is set to 0700."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR:
        path.chmod(PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if missing; an existing file loses group/other bits."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & _GROUP_OTHER:
            os.fchmod(fd, mode & ~_GROUP_OTHER)
    finally:
        os.close(fd)
    return path


def tighten_tree(root: Path) -> int:
    """Remove group and other permissions from ``root`` and everything under it (symbolic
    links are neither followed nor changed). Returns how many entries were changed."""
    changed = 0
    entries = [root]
    for directory, dirnames, filenames in os.walk(root):
        entries.extend(Path(directory, name) for name in (*dirnames, *filenames))
    for entry in entries:
        try:
            info = entry.lstat()
        except FileNotFoundError:
            continue  # removed meanwhile
        if stat.S_ISLNK(info.st_mode) or not stat.S_IMODE(info.st_mode) & _GROUP_OTHER:
            continue
        entry.chmod(stat.S_IMODE(info.st_mode) & ~_GROUP_OTHER)
        changed += 1
    return changed


def secure_state_dir(state_dir: Path) -> None:
    """The state dir at daemon start: created 0700, or an existing one made private."""
    private_dir(state_dir)
    changed = tighten_tree(state_dir)
    if changed:
        log.warning(
            "removed group and other permissions from %d entries under %s (they may hold keys and "
            "service environment)",
            changed,
            state_dir,
        )
