"""Keeping the node's certificate valid: renewal over mutual TLS, without a token.

Like Swarm, a node renews at a random point between 50% and 80% of its certificate's life
(random, so a swarm's nodes do not all renew at once), with a fresh key each time. It proves
who it is with the certificate it still has; the manager signs for the node ID and role the
cluster has on record. A failed renewal is retried with backoff until the next one succeeds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Callable
from pathlib import Path

from shoal import identity, rpc
from shoal.proto import rpc_pb2 as rpb
from shoal.roles.transport import RPCError, StatusCode, TLSMaterial, TransportProvider

log = logging.getLogger("shoal.renewal")

RENEW_FROM = 0.5
RENEW_UNTIL = 0.8
RETRY_MAX = 60.0


class CertificateExpired(RuntimeError):
    """The node's certificate ran out while the node was off; the message says how to recover."""


def renewal_delay(cert_pem: bytes, rng: random.Random | None = None) -> float:
    """Seconds from now until a random point between 50% and 80% of the certificate's life."""
    not_before = identity.cert_not_before(cert_pem)
    not_after = identity.cert_not_after(cert_pem)
    lifetime = (not_after - not_before).total_seconds()
    fraction = (rng or random).uniform(RENEW_FROM, RENEW_UNTIL)
    due = not_before + dt.timedelta(seconds=lifetime * fraction)
    return max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds())


def check_not_expired(creds: identity.NodeCredentials, is_manager: bool) -> None:
    """Refuse to start a worker whose certificate expired: nobody would accept it any more."""
    not_after = identity.cert_not_after(creds.cert_pem)
    if is_manager or not_after > dt.datetime.now(dt.UTC):
        return
    raise CertificateExpired(
        f"this node's certificate expired at {not_after:%Y-%m-%d %H:%M:%S} UTC while the node was off, so "
        "no manager will accept it: stop the daemon, move its state dir aside, start it again and "
        "rejoin with `shoal swarm join --token TOKEN MANAGER_ADDR` (a manager prints the token with "
        "`shoal swarm join-token worker`)"
    )


class CertificateRenewer:
    """Renews the node certificate in the background and hands the new material on."""

    def __init__(
        self,
        *,
        state_dir: Path,
        transport: TransportProvider,
        current: Callable[[], TLSMaterial],
        on_renewed: Callable[[TLSMaterial], None],
        managers: Callable[[], list[str]],
    ) -> None:
        self.state_dir = state_dir
        self.transport = transport
        self.current = current
        self.on_renewed = on_renewed
        self.managers = managers
        self.renewals = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="certificate-renewal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(renewal_delay(self.current().cert_pem))
            backoff = 1.0
            while True:
                try:
                    await self.renew_once()
                    break
                except (RPCError, identity.CertificateError, OSError) as exc:
                    log.warning("certificate renewal failed (retrying in %.0fs): %s", backoff, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)

    async def renew_once(self) -> rpb.IssueNodeCertificateResponse:
        """Ask a manager for a new certificate for a new key, over mutual TLS. The manager
        decides the role in it (a promotion or demotion changes it)."""
        tls = self.current()
        me = identity.parse_identity(tls.cert_pem)
        key_pem = identity.generate_key()
        request = rpb.IssueNodeCertificateRequest(csr=identity.build_csr(key_pem)).SerializeToString()
        last: RPCError | None = None
        for manager in self.managers():
            try:
                raw = await self.transport.call(
                    manager, rpc.ISSUE_NODE_CERTIFICATE, request, tls=tls, timeout=30
                )
                break
            except RPCError as exc:
                last = exc
        else:
            raise last or RPCError(StatusCode.UNAVAILABLE, "no manager to renew the certificate with")
        issued = rpb.IssueNodeCertificateResponse.FromString(raw)
        identity.verify_chain(issued.certificate, tls.root_pem)
        renewed = identity.parse_identity(issued.certificate)
        if renewed.node_id != me.node_id or renewed.cluster_id != me.cluster_id:
            raise identity.CertificateError("the renewed certificate names another node or cluster")
        identity.write_credentials(
            self.state_dir,
            identity.NodeCredentials(key_pem=key_pem, cert_pem=issued.certificate, root_pem=tls.root_pem),
        )
        self.renewals += 1
        log.info("renewed the node certificate (valid until %s)", identity.cert_not_after(issued.certificate))
        self.on_renewed(TLSMaterial(root_pem=tls.root_pem, cert_pem=issued.certificate, key_pem=key_pem))
        return issued
