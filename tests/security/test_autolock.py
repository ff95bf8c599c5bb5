"""Issue 15, item 4: a stolen manager disk with autolock holds nothing readable.

A manager initialised with ``--autolock`` that restarts serves nothing until ``swarm unlock``:
every command answers one line; a wrong key is refused and leaves it locked; the right key
starts it with its state. Its WAL, snapshots and node key hold no secret value and no service
name, and do not open with any other key (tried through shoal's own code: refused). A worker of
that swarm restarts without a key.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness import ShoalNode, wait_until
from shoal import identity, statekeys
from shoal.client import Client
from shoal.daemon.state import CERTS_DIR
from shoal_store_raft.wal import WAL, WalCorruption

pytestmark = [pytest.mark.cluster]

SECRET_VALUE = b"autolock-secret-value-7f3e91"
SERVICE = "autolock-marker-service"
LOCKED = (
    'Error: swarm is encrypted and needs to be unlocked before it can be used. Please use "shoal swarm '
    'unlock" to unlock it.\n'
)


def unlock(node: ShoalNode, key: str) -> subprocess.CompletedProcess[str]:
    from harness import SHOAL

    return subprocess.run(
        [*SHOAL, "swarm", "unlock"],
        input=key + "\n",
        capture_output=True,
        text=True,
        env=node.env(),
        timeout=120,
    )


def files_holding(state_dir: Path, needle: bytes) -> list[Path]:
    return [p for p in state_dir.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_locked_manager_serves_nothing_until_the_right_key_and_its_disk_reveals_nothing(
    node_factory: object, tmp_path: Path
) -> None:
    node: ShoalNode = node_factory("mgr")  # type: ignore[operator]
    node.start()
    out = node.init("--autolock").stdout
    assert "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`" in out
    assert "Please remember to store this key in a password manager" in out
    key = next(word for word in out.split() if word.startswith("SWMKEY-1-"))
    assert node.ok("swarm", "unlock-key", "-q").stdout.strip() == key
    secret_file = tmp_path / "value"
    secret_file.write_bytes(SECRET_VALUE)
    node.ok("secret", "create", "autolock-secret", str(secret_file))
    node.ok("service", "create", "--name", SERVICE, "--replicas", "0", "--detach", "shoal-busybox:1")
    worker: ShoalNode = node_factory("w1", host="127.0.0.2")  # type: ignore[operator]
    worker.start()
    worker.join(node)

    node.stop()
    node.start()
    assert node.info()["Swarm"] == "locked"
    for command in (
        ("node", "ls"),
        ("service", "ls"),
        ("service", "inspect", SERVICE),
        ("secret", "ls"),
        ("swarm", "join-token", "worker"),
        ("swarm", "unlock-key"),
        ("swarm", "update", "--autolock=false"),
        ("service", "logs", SERVICE),
    ):
        result = node.cli(*command)
        assert result.returncode != 0 and result.stderr == LOCKED, (command, result)
    assert node.cli("swarm", "init", "--force-new-cluster").stderr == LOCKED

    wrong = unlock(node, statekeys.format_unlock_key(statekeys.new_key()))
    assert wrong.returncode != 0
    assert wrong.stderr == "Error: swarm could not be unlocked: invalid key provided\n"
    malformed = unlock(node, "SWMKEY-1-not*base64")
    assert malformed.returncode != 0 and malformed.stderr.count("\n") == 1, malformed
    assert "invalid unlock key" in malformed.stderr
    assert node.cli("node", "ls").stderr == LOCKED

    # The disk, while locked (nothing is held open): no value, no name, nothing opens.
    state = node.state_dir
    assert files_holding(state, SECRET_VALUE) == []
    assert files_holding(state, SERVICE.encode()) == []
    wal_dir = state / "plugins" / "store-raft" / "wal"
    with pytest.raises(WalCorruption, match="does not decrypt"):
        WAL.open(wal_dir, sealer=statekeys.Sealer(statekeys.new_key()))
    with pytest.raises(statekeys.SealError, match="invalid key provided"):
        statekeys.load(state, statekeys.new_key())
    with pytest.raises(identity.KeySealedError):
        identity.load_credentials(state / CERTS_DIR)
    # With the unlock key, the same code opens it all: the data is there, encrypted.
    dek = statekeys.load(state, statekeys.parse_unlock_key(key)).dek
    wal, replayed = WAL.open(wal_dir, sealer=statekeys.Sealer(dek))
    wal.close()
    assert any(SERVICE.encode() in entry.data for entry in replayed.entries)

    # A worker of an autolocked swarm is never locked.
    worker.stop()
    worker.start()
    assert worker.info()["Swarm"] == "active"

    right = unlock(node, key)
    assert right.returncode == 0, right.stderr
    assert node.info()["Swarm"] == "active"
    assert wait_until(lambda: SERVICE in node.cli("service", "ls").stdout, 30, what="the service back")
    assert "autolock-secret" in node.ok("secret", "ls").stdout
    assert node.cli("swarm", "unlock").stderr == "Error: swarm is not locked\n"
    inspect = json.dumps(Client(f"unix://{node.socket}").call("swarm.inspect"))
    assert '"auto_lock_managers": true' in inspect
    assert key[len("SWMKEY-1-") :][:40] not in inspect, "swarm inspect shows the unlock key"
