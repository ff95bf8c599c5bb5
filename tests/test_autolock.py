"""Issue 15, item 4: autolock turned on, rotated and turned off on a running 3-manager swarm.

``swarm update --autolock=true`` prints the key and every manager re-wraps its keys with it,
without a restart; ``swarm unlock-key --rotate`` replaces it on every manager, after which a
restarted manager opens only with the new key; a manager demoted meanwhile is a worker that
restarts without one; ``--autolock=false`` lets managers restart without one. Turning autolock
on replaces each manager's data key, so a copy of a disk taken before opens nothing written
after. Each manager's keys file is checked through ``shoal.statekeys`` itself.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from harness import SHOAL, ShoalNode, wait_until
from shoal import identity, statekeys
from shoal.daemon.state import CERTS_DIR
from shoal_store_raft.wal import WAL, WalCorruption

pytestmark = [pytest.mark.cluster]


def opens_with(node: ShoalNode, key: bytes) -> bool:
    """Whether ``key`` (and only a key: the file is locked) opens this manager's keys."""
    try:
        return statekeys.is_locked(node.state_dir) and statekeys.load(node.state_dir, key) is not None
    except statekeys.SealError:
        return False


def unlock(node: ShoalNode, key: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, "swarm", "unlock"],
        input=statekeys.format_unlock_key(key) + "\n",
        capture_output=True,
        text=True,
        env=node.env(),
        timeout=120,
    )


def key_of(output: str) -> bytes:
    return statekeys.parse_unlock_key(next(w for w in output.split() if w.startswith("SWMKEY-1-")))


def wal_copy(node: ShoalNode, target: Path) -> Path:
    """A copy of a live manager's WAL to open (opening may cut a torn tail: not the original)."""
    shutil.copytree(node.state_dir / "plugins" / "store-raft" / "wal", target)
    return target


def test_autolock_on_rotate_and_off_reach_every_manager_without_downtime(
    node_factory: object, tmp_path: Path
) -> None:
    make = node_factory  # type: ignore[assignment]
    m1: ShoalNode = make("m1").start()  # type: ignore[operator]
    m1.init()
    m2: ShoalNode = make("m2", host="127.0.0.2").start()  # type: ignore[operator]
    m2.join(m1, "manager")
    assert m1.cli("swarm", "unlock-key").stderr.startswith("Error: no unlock key is set")
    assert m1.cli("swarm", "unlock-key", "--rotate").stderr == (
        "Error: cannot rotate because autolock is not turned on\n"
    )
    bad = m1.cli("swarm", "update", "--autolock=maybe")
    assert bad.returncode != 0 and bad.stderr == 'Error: invalid --autolock "maybe": use true or false\n'

    stolen = statekeys.load(m1.state_dir)  # a copy of m1's disk now (the KEK lies beside the DEK)
    out = m2.ok("swarm", "update", "--autolock").stdout  # through a follower; docker's bare flag
    assert out.startswith("Swarm updated.\nTo unlock a swarm manager after it restarts")
    first = key_of(out)
    # A manager that joins an autolocked swarm wraps its new keys with the swarm's key too.
    m3: ShoalNode = make("m3", host="127.0.0.3").start()  # type: ignore[operator]
    m3.join(m1, "manager")
    managers = [m1, m2, m3]
    for node in managers:
        wait_until(lambda node=node: opens_with(node, first), 60, what=f"{node.name} to re-wrap with the key")
    # Turning autolock on replaced the DEK: the copy opens none of what is written from now on.
    m1.ok("service", "create", "--name", "after-autolock", "--replicas", "0", "--detach", "shoal-busybox:1")
    chain = statekeys.load(m1.state_dir, first).store_sealer()
    wal = wal_copy(m1, tmp_path / "wal")
    assert any(b"after-autolock" in e.data for e in WAL.open(wal, sealer=chain)[1].entries)
    with pytest.raises(WalCorruption, match="does not decrypt"):
        WAL.open(wal, sealer=stolen.store_sealer())

    rotated = m3.ok("swarm", "unlock-key", "--rotate").stdout
    assert rotated.startswith("Successfully rotated manager unlock key.\n\nTo unlock a swarm manager")
    second = key_of(rotated)
    assert second != first
    assert m1.ok("swarm", "unlock-key", "-q").stdout.strip() == statekeys.format_unlock_key(second)
    for node in managers:
        wait_until(
            lambda node=node: opens_with(node, second), 60, what=f"{node.name} to re-wrap with the new key"
        )
        assert not opens_with(node, first)
    m1.ok("service", "create", "--name", "during-rotation", "--replicas", "0", "--detach", "shoal-busybox:1")

    m3.stop()
    m3.start()
    assert m3.info()["Swarm"] == "locked"
    old = unlock(m3, first)
    assert old.returncode != 0 and old.stderr == "Error: swarm could not be unlocked: invalid key provided\n"
    assert unlock(m3, second).returncode == 0
    wait_until(lambda: "during-rotation" in m3.cli("service", "ls").stdout, 30, what="m3 to serve again")

    # A manager demoted while autolock is on becomes a worker, and workers are never locked.
    m1.ok("node", "demote", "m3")
    wait_until(lambda: m3.info().get("Role") == "worker", 60, what="m3 to run as a worker")
    assert not statekeys.exists(m3.state_dir)
    assert not identity.key_is_sealed(m3.state_dir / CERTS_DIR)
    m3.stop()
    m3.start()
    assert m3.info()["Swarm"] == "active"
    managers = [m1, m2]

    m1.ok("swarm", "update", "--autolock=false")
    for node in managers:
        wait_until(
            lambda node=node: not statekeys.is_locked(node.state_dir), 30, what=f"{node.name} unlocked keys"
        )
    assert m1.cli("swarm", "unlock-key").returncode != 0
    m2.stop()
    m2.start()
    assert m2.info()["Swarm"] == "active"
    wait_until(lambda: "during-rotation" in m2.cli("service", "ls").stdout, 30, what="m2 to serve again")
