"""What a node remembers about its swarm membership (``<state-dir>/state.json``).

The cluster state itself lives in the store (managers) and the node's identity in its
certificates; this file only says which swarm the node is in, in which role, which plugins the
swarm uses, and where its managers are, so that a restarted daemon can rejoin by itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shoal.filemodes import PRIVATE_FILE, private_dir

STATE_FILE = "state.json"
CERTS_DIR = "certificates"


@dataclass
class NodeState:
    node_id: str
    cluster_id: str
    role: str  # "manager" or "worker"
    listen_addr: str
    advertise_addr: str
    #: Every manager's address as the last session message listed them (leader first), so a
    #: restarted node finds the swarm even when the manager it joined through is down.
    managers: list[str] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"


def load_state(state_dir: Path) -> NodeState | None:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read {path}: {exc}; move it away to start this node afresh") from exc
    return NodeState(**data)


def save_state(state_dir: Path, state: NodeState) -> None:
    """Write atomically (temp file, fsync, rename) so a crash never leaves half a file; 0600
    in a 0700 directory, like everything under the state dir."""
    private_dir(state_dir)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)  # a leftover temp file keeps its old mode otherwise
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(state), fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
