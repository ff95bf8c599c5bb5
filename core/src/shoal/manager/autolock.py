"""Autolock on the manager side: the cluster's setting and unlock key, and each manager
following them (``shoal.statekeys`` holds the keys themselves).

``swarm update --autolock=true`` sets ``spec.encryption_config.auto_lock_managers`` and, in the
same write, a new unlock key in ``Cluster.manager_unlock_key``; ``--autolock=false`` clears
both; ``swarm unlock-key --rotate`` replaces the key. The key rides the replicated store, so
every manager learns it and re-wraps its own keys (``follow_cluster``): no downtime, no manager
restarts, and once a manager re-wrapped, the old key no longer opens its keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shoal import statekeys
from shoal.proto import objects_pb2 as pb
from shoal.roles.transport import StatusCode
from shoal.specs import SpecError
from shoal.store.memory import ObjectStore, Tx, copy

log = logging.getLogger("shoal.manager.autolock")

ROTATE_WITHOUT_AUTOLOCK = "cannot rotate because autolock is not turned on"


def parse_autolock(value: object) -> bool:
    """``--autolock=true|false`` as docker spells booleans; ``SpecError`` otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "t", "yes"):
        return True
    if text in ("false", "0", "f", "no"):
        return False
    raise SpecError(f'invalid --autolock "{value}": use true or false')


def autolock_changes(params: dict[str, Any]) -> list[Callable[[pb.Cluster], None]]:
    """The cluster changes ``swarm update`` makes for ``--autolock`` (none when not given)."""
    if params.get("autolock") is None:
        return []
    wanted = parse_autolock(params["autolock"])

    def change(cluster: pb.Cluster) -> None:
        cluster.spec.encryption_config.auto_lock_managers = wanted
        if not wanted:
            cluster.manager_unlock_key = b""
        elif not cluster.manager_unlock_key:
            cluster.manager_unlock_key = statekeys.new_key()

    return [change]


async def unlock_key(store: ObjectStore, *, rotate: bool) -> dict[str, str]:
    """``swarm unlock-key [--rotate]``: the current key (empty without autolock)."""
    from shoal.manager.controlapi import ControlError

    if rotate:

        def rotated(tx: Tx) -> None:
            cluster = tx.cluster()
            if cluster is None:
                raise ControlError(StatusCode.FAILED_PRECONDITION, "the swarm has no cluster object yet")
            if not cluster.spec.encryption_config.auto_lock_managers:
                raise ControlError(StatusCode.FAILED_PRECONDITION, ROTATE_WITHOUT_AUTOLOCK)
            cluster = copy(cluster)
            cluster.manager_unlock_key = statekeys.new_key()
            tx.update(cluster)

        await store.update(rotated)
    cluster = store.view.cluster()
    key = cluster.manager_unlock_key if cluster is not None else b""
    return {"UnlockKey": statekeys.format_unlock_key(key) if key else ""}


async def follow_cluster(store: ObjectStore, keyring: statekeys.ManagerKeyring) -> None:
    """Re-wrap this manager's keys whenever the cluster's autolock setting or key changes
    (and once at start: a manager that was down during a rotation catches up here)."""

    def apply(cluster: pb.Cluster | None) -> None:
        if cluster is None:
            return
        auto_lock = cluster.spec.encryption_config.auto_lock_managers
        try:
            if keyring.follow(auto_lock, cluster.manager_unlock_key):
                log.info(
                    "manager keys re-wrapped (autolock %s)", "on, new unlock key" if auto_lock else "off"
                )
        except OSError as exc:
            log.error("could not re-wrap this manager's keys: %s", exc)

    with store.watch(["cluster"]) as watch:
        apply(store.view.cluster())
        while True:
            event = await watch.get()
            apply(event.obj)
